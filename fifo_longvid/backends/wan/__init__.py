"""Wan2.1 T2V and SkyReels-V2 diffusion forcing (DiT, flow matching) through diffusers, as a FIFO backend.

``network.py`` runs diffusers' transformer with one timestep per (sample, frame) (a per-token table for Wan, the
diffusion-forcing (B, F) table for SkyReels); ``attention.py`` hands its attention layers to the techniques in
frame rows; ``vae.py`` normalises latents and streams the causal VAE's decode with constant memory; ``model.py``
is the backend (UMT5 text through diffusers' own ``encode_prompt``, VAE, the folder's flow schedule);
``load.py`` reads diffusers pipeline folders (told apart by ``model_index.json``), ``download.py`` fetches them;
``tiny.py`` builds the seeded random-weight ``tiny_wan`` model and writes tiny pipeline folders.
"""
