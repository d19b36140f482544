"""Host syncs that are allowed outside FIFO iterations, by (file, function), each with its reason.

Inside an iteration (``FifoStepper.step`` and the techniques' ``end_iteration``) none is allowed. Line numbers
are left out on purpose: they move with every edit, the function does not. VideoCrafter's files are named as
``models/...``; ``videocrafter/...`` (their new home under ``backends/``) is accepted for the same file.
"""

from __future__ import annotations

from .mode import Sync

ALLOWED: dict[tuple[str, str], str] = {
    ("fifo_longvid/models/load.py", "load_model"): "weights: the checkpoint's tensors go to the card once, at load",
    ("fifo_longvid/backends/__init__.py", "load_backend"): "weights: the model goes to the card once, at load",
    ("fifo_longvid/backends/wan/model.py", "place"): "weights: the DiT and the VAE go to the card once, at load",
    ("fifo_longvid/backends/animatediff/family.py", "_load"): "weights: the AnimateDiff model goes to the card once, "
                                                              "at load",
    ("fifo_longvid/diffusion/schedule.py", "make_ddim_schedule"): "the DDIM sub-schedule is built once per run from "
                                                                  "the model's alphas_cumprod buffer",
    ("fifo_longvid/models/schedule.py", "scaled_ddim_schedule"): "VideoCrafter2's scaled DDIM sub-schedule is built "
                                                                 "once per run from the model's scale_arr buffer",
    ("fifo_longvid/diffusion/schedule.py", "<dictcomp>"): "DDIMSchedule.to: the arrays go to the card once per run",
    ("fifo_longvid/diffusion/flow.py", "<dictcomp>"): "FlowSchedule.to: the arrays go to the card once per run",
    ("fifo_longvid/diffusion/sampling.py", "check_finite"): "the finite check rides on the one sync per frame (the "
                                                            "dequeued frame's fetch; in the base clip, its last step)",
    ("fifo_longvid/fifo/sampler.py", "__init__"): "FifoStepper's per-run tables go to the card once",
    ("fifo_longvid/fifo/state.py", "append"): "the latent log: the finished frame leaves the card (the frame's sync)",
    ("fifo_longvid/fifo/state.py", "snapshot"): "--resume state: saved every checkpoint_every frames",
    ("fifo_longvid/fifo/state.py", "save_state"): "--resume state: saved every checkpoint_every frames",
    ("fifo_longvid/fifo/state.py", "load_state"): "--resume: the saved queue goes to the card once",
    ("fifo_longvid/fifo/state.py", "<dictcomp>"): "--resume: the saved extras go to the card once",
    ("fifo_longvid/techniques/attn_reuse.py", "bind"): "reads the schedule's timesteps once per run",
    ("fifo_longvid/techniques/cfg_cache.py", "bind"): "reads the schedule's timesteps once per run",
    ("fifo_longvid/techniques/tgate.py", "bind"): "reads the schedule's timesteps once per run",
    ("fifo_longvid/techniques/deepcache.py", "bind"): "reads the schedule's timesteps once per run",
    ("fifo_longvid/fifo/autobatch.py", "cuda_rule"): "--max-batch auto: one probe forward, once per run",
    ("fifo_longvid/io/sinks.py", "to_hwc_uint8"): "the decoded frame leaves the card to be written",
    ("fifo_longvid/run/fifo_run.py", "resume"): "--resume: the saved max-batch is read once (the extras were moved to "
                                                "the card by load_state)",
    ("fifo_longvid/models/text.py", "forward"): "the prompt's tokens go to the card, once per prompt",
    ("fifo_longvid/backends/animatediff/model.py", "encode_text"): "the prompt's tokens go to the card, once per "
                                                                   "prompt",
    ("fifo_longvid/backends/wan/model.py", "encode_text"): "the prompt's tokens go to the card, once per prompt",
    ("fifo_longvid/backends/offload.py", "visit"): "an offloaded text encoder's weights visit the card one submodule "
                                                   "at a time while the prompts are encoded (once per run)",
    ("fifo_longvid/backends/wan/vae.py", "latent_stats"): "Wan's VAE latent mean and std (16 floats each) go to the "
                                                          "card at each decode, beside the decoded frame's own sync "
                                                          "(outside the iterations; caching them would remove it)",
    ("fifo_longvid/run/conditioning.py", "encode_conditioning"): "--image: the image goes to the card, once per run",
    ("fifo_longvid/models/image.py", "clip_preprocess"): "--image: CLIP's mean and std go to the card, once per "
                                                         "image",
    ("fifo_longvid/io/video.py", "append"): "the decoded frame leaves the card to be written",
    ("fifo_longvid/io/video.py", "to_uint8"): "the decoded frame leaves the card to be written",
    ("fifo_longvid/run/fifo_run.py", "open_writer"): "--resume: frames written before the interruption are re-decoded",
}


def unexplained(syncs: list[Sync]) -> list[str]:
    """The syncs whose (file, function) is not on the allowlist."""
    out = []
    for s in syncs:
        path, _, rest = s.where.partition(":")
        path = path.replace("fifo_longvid/backends/videocrafter/", "fifo_longvid/models/")
        func = rest.partition("(")[2].rstrip(")")
        if (path, func) not in ALLOWED:
            out.append(str(s))
    return out
