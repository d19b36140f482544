"""Train the ``toy`` model (VAE, then U-Net) on procedural shape videos, and export its shipped weights.

    pip install -e .[train]
    python scripts/train_toy.py --out runs/toy            # resumable: rerun the same command to continue
    python scripts/train_toy.py --out runs/toy2 --seed 1 \
        --init-from fifo_longvid/backends/videocrafter/data/toy.safetensors
                                                          # continue from the shipped weights (new data order)

Stages (each skipped when its output exists): VAE -> latent scale -> latent pool -> U-Net -> export
``toy.safetensors`` (fp16 U-Net EMA + VAE; the text tower is the preset's seeded recipe, not stored).
Lightning checkpoints every ``--ckpt-every`` steps and on SIGTERM (then exits; rerun to resume, or rerun with
``--unet-steps N`` at the reached step N to export now); losses: ``<out>/{vae,unet}/version_*/metrics.csv``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import time
import warnings
from pathlib import Path

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, logs, exported weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--unet-steps", type=int, default=3000)
    p.add_argument("--unet-batch", type=int, default=16)
    p.add_argument("--unet-minutes", type=float, default=0.0, help="stop the U-Net stage after this long (0: no limit)")
    p.add_argument("--pool-clips", type=int, default=1200, help="clips pre-encoded for U-Net training")
    p.add_argument("--pool-frames", type=int, default=16)
    p.add_argument("--diag-p", type=float, default=0.6, help="share of U-Net batches with FIFO-style per-frame t")
    p.add_argument("--diag-max-step", type=float, default=80.0,
                   help="largest timestep gap between neighbouring frames of a diagonal batch (FIFO: 999/(f*n-1))")
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--lr", type=float, default=8e-4, help="U-Net (and text tower) AdamW learning rate")
    p.add_argument("--lr-decay-steps", type=int, default=0,
                   help="cosine-decay the U-Net learning rate to --lr-floor x lr over this many steps (0: constant)")
    p.add_argument("--lr-floor", type=float, default=0.1)
    p.add_argument("--anchor-p", type=float, default=0.0,
                   help="share of U-Net batches with one or two nearly clean frames at one end and the rest noised "
                        "(taken from both other kinds), so that placing the rest needs the caption's direction")
    p.add_argument("--text-aux", type=float, default=0.0,
                   help="weight of a colour/shape/motion classification loss on the text tower's contexts, so that "
                        "every caption word moves the context (the head is not shipped); 0: off")
    p.add_argument("--frozen-text", action="store_true",
                   help="keep the seeded text tower frozen (default: train it with the U-Net and ship it)")
    p.add_argument("--export-only", action="store_true",
                   help="export toy.safetensors from the U-Net stage's last checkpoint now (training may go on)")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--export", type=Path, default=None, help="copy the exported weights here as well")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator: cpu, gpu or auto")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from an exported toy.safetensors (e.g. the shipped one): its VAE and latent scale are "
                        "kept, the U-Net and text tower continue training from its EMA weights")
    return p.parse_args()


def callbacks(every: int, total: int, name: str) -> list:
    """Lightning callbacks: print step, losses, speed and ETA (nohup-friendly, unlike a progress bar), and make
    SIGTERM a clean stop: finish the step, checkpoint, exit (rerun to resume)."""
    import pytorch_lightning as pl

    class Progress(pl.Callback):
        def __init__(self) -> None:
            self.t0 = time.time()
            self.s0: int | None = None
            self.signalled = False

        def on_train_start(self, trainer, module) -> None:
            def stop(signum, frame) -> None:
                print(f"[{name}] SIGTERM: stopping after this step", flush=True)
                self.signalled = True
                trainer.should_stop = True

            signal.signal(signal.SIGTERM, stop)  # after Lightning has set up its own signal handling

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step
            if self.s0 is None:
                self.s0, self.t0 = step, time.time()
                return
            if step % every == 0:
                rate = (time.time() - self.t0) / max(step - self.s0, 1)
                logs = {k: float(v) for k, v in trainer.callback_metrics.items()}
                vals = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
                print(f"[{name}] step {step}/{total} {vals} {rate:.2f}s/step eta {rate * (total - step) / 60:.1f} min",
                      flush=True)

    return [Progress()]


def fit(module, data, out: Path, name: str, steps: int, args: argparse.Namespace, minutes: float = 0.0) -> None:
    """Run one Lightning stage, resuming from ``<out>/<name>/last.ckpt``; SIGTERM stops cleanly with a checkpoint."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    ckdir = out / name
    last = ckdir / "last.ckpt"
    progress = callbacks(args.log_every, steps, name)[0]
    trainer = pl.Trainer(
        max_steps=steps, max_time={"minutes": minutes} if minutes else None, accelerator=args.accelerator, devices=1,
        logger=CSVLogger(out, name=name), enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=10, num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=ckdir, every_n_train_steps=args.ckpt_every, save_last=True), progress],
    )
    previous = signal.getsignal(signal.SIGTERM)
    try:
        loader = torch.utils.data.DataLoader(data, batch_size=args.vae_batch if name == "vae" else args.unet_batch)
        trainer.fit(module, loader, ckpt_path=str(last) if last.exists() else None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    trainer.save_checkpoint(last)
    # --unet-minutes running out is a normal end (export follows); a signal or crash before max_steps is not
    if trainer.global_step < steps and (progress.signalled or not minutes):
        raise SystemExit(f"[{name}] stopped at step {trainer.global_step}/{steps}; rerun the command to resume")


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    torch.set_num_threads(args.threads)
    import pytorch_lightning as pl

    from fifo_longvid.backends.videocrafter.load import build_model
    from fifo_longvid.backends.videocrafter.presets import TOY_TEXT_SEED, toy
    from fifo_longvid.backends.videocrafter.recipe import recipe_for_model
    from fifo_longvid.toy.data import ShapeClips
    from fifo_longvid.toy.training import LatentPool, UNetModule, VAEModule, encode_pool, latent_std

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    pl.seed_everything(args.seed, workers=True)
    cfg = toy()
    model = build_model(cfg, "cpu")
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in
                [("unet", model.unet), ("vae", model.first_stage_model), ("text", model.cond_stage_model)]}
    print(f"params: {n_params} total {sum(n_params.values()) / 1e6:.2f}M", flush=True)
    t_start = time.time()

    vae_file = out / "vae.pt"
    if args.init_from and not (out / "unet" / "last.ckpt").exists():
        init_from_export(model, args.init_from, out)
    if not vae_file.exists():
        vm = VAEModule(model.first_stage_model)
        fit(vm, ShapeClips(8, seed=args.seed), out, "vae", args.vae_steps, args)
        torch.save(model.first_stage_model.state_dict(), vae_file)
    model.first_stage_model.load_state_dict(torch.load(vae_file, weights_only=True))
    vae = model.first_stage_model.eval()

    scale_file = out / "scale.json"
    if not scale_file.exists():
        scale_file.write_text(json.dumps({"scale_factor": 1.0 / latent_std(vae)}))
    scale = json.loads(scale_file.read_text())["scale_factor"]
    print(f"latent scale factor {scale:.6f}", flush=True)

    pool_file = out / "pool.pt"
    if not pool_file.exists():
        lat, caps = encode_pool(vae, scale, args.pool_clips, args.pool_frames, seed=args.seed + 1)
        torch.save({"latents": lat, "captions": caps}, pool_file)
    pool = torch.load(pool_file, weights_only=True)

    text = model.cond_stage_model
    if not args.init_from:
        text.load_state_dict(recipe_for_model(text, TOY_TEXT_SEED))
    um = UNetModule(model.unet, text, model.alphas_cumprod, diag_p=args.diag_p, diag_max_step=args.diag_max_step,
                    lr=args.lr, ema_decay=args.ema_decay, train_text=not args.frozen_text,
                    decay_steps=args.lr_decay_steps, lr_floor=args.lr_floor,
                    text_aux=0.0 if args.export_only else args.text_aux,
                    anchor_p=args.anchor_p)
    if args.export_only:
        ckpt = torch.load(out / "unet" / "last.ckpt", map_location="cpu", weights_only=True)
        # the caption head is not exported: a run trained with --text-aux exports with or without the flag
        um.load_state_dict({k: v for k, v in ckpt["state_dict"].items() if not k.startswith("caption_head.")})
        um.trainer_step = int(ckpt["global_step"])
        export(um, vae, scale, out, args, 0.0)
        return
    fit(um, LatentPool(pool["latents"], pool["captions"], cfg.unet.temporal_length, args.seed + 2), out, "unet",
        args.unet_steps, args, args.unet_minutes)

    export(um, vae, scale, out, args, time.time() - t_start)


def init_from_export(model, path: Path, out: Path) -> None:
    """Continue from an export (no optimizer state survives an export): VAE and scale as they were, so the
    U-Net's latents keep their meaning; U-Net and text tower from the exported EMA."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    sd = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    for prefix, module in (("first_stage_model.", model.first_stage_model), ("model.diffusion_model.", model.unet),
                           ("cond_stage_model.", model.cond_stage_model)):
        part = {k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)}
        if part:
            module.load_state_dict(part, strict=True)
    torch.save(model.first_stage_model.state_dict(), out / "vae.pt")
    (out / "scale.json").write_text(json.dumps({"scale_factor": float(meta["scale_factor"])}))
    print(f"initialised from {path} (trained for {meta.get('unet_steps', '?')} U-Net steps)", flush=True)
    (out / "prior_steps.json").write_text(json.dumps({"unet_steps": int(meta.get("unet_steps", 0))}))


def export(um, vae, scale: float, out: Path, args: argparse.Namespace, seconds: float) -> None:
    """fp16 safetensors of the U-Net EMA and the VAE under the VideoCrafter checkpoint's key names."""
    from safetensors.torch import save_file

    from fifo_longvid.backends.videocrafter.presets import TOY_TEXT_SEED

    sd = {f"model.diffusion_model.{k}": v for k, v in um.ema.state_dict().items()}
    sd.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    if um.ema_text is not None:  # a trained text tower ships; a frozen one is the recipe, rebuilt at load
        sd.update({f"cond_stage_model.{k}": v for k, v in um.ema_text.state_dict().items()})
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}
    steps = getattr(um, "trainer_step", None) or um.global_step
    prior = out / "prior_steps.json"  # a run continued with --init-from counts the steps before it too
    steps += json.loads(prior.read_text())["unet_steps"] if prior.exists() else 0
    meta = {"scale_factor": repr(scale), "text_seed": str(TOY_TEXT_SEED), "unet_steps": str(steps),
            "text": "trained" if um.ema_text is not None else "recipe",
            "seed": str(args.seed), "train_seconds_this_session": f"{seconds:.0f}"}
    path = out / "toy.safetensors"
    save_file(sd, str(path), metadata=meta)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB) sha256 {digest} metadata {meta}", flush=True)
    if args.export:
        args.export.write_bytes(path.read_bytes())


if __name__ == "__main__":
    main()
