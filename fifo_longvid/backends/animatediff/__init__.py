"""AnimateDiff (SD-1.5 + motion modules) through diffusers and transformers, as a FIFO backend.

diffusers' ``UNetMotionModel`` embeds one timestep per sample; FIFO needs one per frame. ``network.py`` runs
diffusers' own blocks under a forward that embeds one timestep per (sample, frame); ``attention.py`` hands
its attention layers to the techniques; ``model.py`` is the backend (text, VAE, schedule from the folder's
configs); ``load.py`` reads diffusers folders, motion adapters and single files; ``download.py`` fetches SD-1.5
and a motion adapter; ``tiny.py`` builds the
seeded random-weight ``tiny_animatediff`` model.
"""
