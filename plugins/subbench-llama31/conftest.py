# Lets `python -m pytest plugins/subbench-llama31/tests` import the plugin without installing it.
