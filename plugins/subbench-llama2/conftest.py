# Lets `python -m pytest plugins/subbench-llama2/tests` import the plugin without installing it.
