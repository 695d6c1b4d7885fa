# Lets `python -m pytest plugins/subbench-gemma2/tests` import the plugin without installing it.
