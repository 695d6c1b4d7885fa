# Lets `python -m pytest plugins/subbench-mistral/tests` import the plugin without installing it.
