# Lets `python -m pytest plugins/subbench-qwen25/tests` import the plugin without installing it.
