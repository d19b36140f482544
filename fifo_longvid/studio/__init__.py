"""``fifo-gen studio``: a local web page that shows a FIFO video while it is made (needs the ``studio`` extra).

``cli_command``: inputs <-> the exact ``fifo-gen generate`` argv; ``jobs``: inputs -> a validated run;
``runner``: the one-at-a-time run queue that owns the model; ``history``: past outputs from their sidecars;
``presets``: ``configs/*.yaml`` as technique inputs; ``compare``: the A/B view; ``app``: the page;
``server``: loading and serving. Only ``app`` and ``server`` import gradio.
"""
