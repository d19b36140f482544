"""Lightning modules that train the toy model: the VAE first, then the U-Net on frozen-VAE latents.

Only ``scripts/train_toy.py`` imports this module (pytorch-lightning is the optional ``train`` extra).
"""

from __future__ import annotations

import copy
import random

import pytorch_lightning as pl
import torch

from ..backends.videocrafter.text import OpenCLIPTextEncoder
from ..backends.videocrafter.unet import UNet3D
from ..backends.videocrafter.vae import AutoencoderKL
from .data import ShapeClips, render, sample_video
from .objectives import CaptionHead, anchored_timesteps, cosine_lr

FPS = 8  # the fps conditioning used in training; fifo-gen's default


class VAEModule(pl.LightningModule):
    """Reconstruction (L1 + MSE, foreground pixels weighted up) plus a small KL, on single frames."""

    def __init__(self, vae: AutoencoderKL, lr: float = 1e-3, kl_weight: float = 1e-5, fg_weight: float = 9.0,
                 warmup: int = 50) -> None:
        super().__init__()
        self.vae = vae
        self.lr, self.kl_weight, self.fg_weight, self.warmup = lr, kl_weight, fg_weight, warmup

    def training_step(self, batch: tuple[torch.Tensor, list[str]], batch_idx: int) -> torch.Tensor:
        clips, _ = batch  # (B, 3, F, H, W): take one random frame per clip
        pick = torch.randint(0, clips.shape[2], (clips.shape[0],), device=clips.device)
        x = clips[torch.arange(clips.shape[0], device=clips.device), :, pick]
        mean, logvar = self.vae.encode(x)
        logvar = logvar.clamp(-30, 20)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        y = self.vae.decode(z)
        w = 1 + self.fg_weight * (x.amax(1, keepdim=True) > -0.6).float()  # shapes are a small share of pixels
        rec = (w * ((y - x).abs() + (y - x) ** 2)).mean()
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
        loss = rec + self.kl_weight * kl
        self.log_dict({"vae_rec": rec, "vae_kl": kl, "loss": loss}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.vae.parameters(), lr=self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / self.warmup))
        return [opt], [{"scheduler": sched, "interval": "step"}]


class LatentPool(torch.utils.data.IterableDataset):
    """Random ``window``-frame slices of pre-encoded clips: encoding on the fly would cost more than the U-Net."""

    def __init__(self, latents: torch.Tensor, captions: list[str], window: int, seed: int) -> None:
        super().__init__()
        self.latents, self.captions, self.window, self.seed = latents, captions, window, seed

    def __iter__(self):
        rng = random.Random(self.seed)
        n, total = self.latents.shape[0], self.latents.shape[2]
        while True:
            i, s = rng.randrange(n), rng.randrange(total - self.window + 1)
            yield self.latents[i, :, s:s + self.window], self.captions[i]


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, scale_factor: float, num_clips: int, num_frames: int, seed: int,
                two_shape_p: float = 0.0, log_every: int = 100) -> tuple[torch.Tensor, list[str]]:
    """(N, 4, F, h, w) scaled posterior-mean latents of ``num_clips`` seeded clips, and their captions."""
    rng = random.Random(seed)
    out, caps = [], []
    for k in range(num_clips):
        spec = sample_video(rng, 2 if rng.random() < two_shape_p else 1)
        video = render(spec, num_frames, rng.randrange(0, 64))
        mean, _ = vae.encode(video.permute(1, 0, 2, 3))
        out.append(mean.permute(1, 0, 2, 3) * scale_factor)
        caps.append(spec.caption)
        if log_every and (k + 1) % log_every == 0:
            print(f"encoded {k + 1}/{num_clips} clips", flush=True)
    return torch.stack(out), caps


@torch.no_grad()
def latent_std(vae: AutoencoderKL, num_frames: int = 512, seed: int = 123) -> float:
    """Std of the VAE's posterior means over generator frames (the scale factor is its inverse)."""
    ds = iter(ShapeClips(8, seed=seed))
    frames = torch.cat([next(ds)[0].permute(1, 0, 2, 3) for _ in range(num_frames // 8)])
    return float(vae.encode(frames)[0].std())


def diagonal_timesteps(b: int, f: int, max_step: float, timesteps: int = 1000) -> torch.Tensor:
    """(B, F) timesteps rising linearly across frames, as FIFO's windows see them (clipped to the schedule)."""
    d = torch.rand(b, 1) * max_step
    t0 = torch.rand(b, 1) * (timesteps - 1 + d * (f - 1)) - d * (f - 1)
    return (t0 + d * torch.arange(f)).round().clamp(0, timesteps - 1).long()


class UNetModule(pl.LightningModule):
    """Epsilon prediction on the model's own DDPM schedule; 10% empty captions for classifier-free guidance.

    ``diag_p`` of the batches get per-frame timesteps rising across the clip (FIFO's diagonal), the rest one
    timestep per clip as VideoCrafter2 was trained. With ``train_text`` the text tower learns with the U-Net:
    the seeded random tower maps "red" and "blue" captions to contexts only 17 % apart, too little for shape and
    motion words. An EMA copy of U-Net and text tower is kept and is what ships.
    """

    def __init__(self, unet: UNet3D, text: OpenCLIPTextEncoder, alphas_cumprod: torch.Tensor, lr: float = 5e-4,
                 drop_p: float = 0.1, diag_p: float = 0.5, diag_max_step: float = 70.0, ema_decay: float = 0.995,
                 warmup: int = 100, train_text: bool = False, decay_steps: int = 0, lr_floor: float = 0.1,
                 text_aux: float = 0.0, anchor_p: float = 0.0) -> None:
        super().__init__()
        self.unet = unet
        self.train_text = train_text
        if train_text:
            # the token table (49408 x width) stays the recipe's: its dense AdamW update costs more than the
            # U-Net step, and the trainable layers above it are enough to pull the captions apart
            self.text_model = text.requires_grad_(True)
            text.model.token_embedding.requires_grad_(False)
            self.text = [text]
        else:
            self.text = [text.requires_grad_(False)]  # a list: frozen, not a submodule, not in checkpoints
        self.ema = copy.deepcopy(unet).requires_grad_(False)
        self.ema_text = copy.deepcopy(text).requires_grad_(False) if train_text else None
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.lr, self.drop_p, self.diag_p, self.diag_max_step = lr, drop_p, diag_p, diag_max_step
        self.ema_decay, self.warmup = ema_decay, warmup
        self.decay_steps, self.lr_floor = decay_steps, lr_floor
        self.text_aux, self.anchor_p = text_aux, anchor_p
        if text_aux:
            if not train_text:
                raise ValueError("text_aux trains the text tower: it needs train_text")
            self.caption_head = CaptionHead(text.model.ln_final.normalized_shape[0])
        self._ctx_cache: dict[str, torch.Tensor] = {}

    def context(self, captions: list[str]) -> torch.Tensor:
        if self.train_text:
            return self.text[0](captions)
        with torch.no_grad():
            missing = sorted({c for c in captions if c not in self._ctx_cache})
            if missing:
                for c, z in zip(missing, self.text[0](missing), strict=True):
                    self._ctx_cache[c] = z
            return torch.stack([self._ctx_cache[c] for c in captions])

    def training_step(self, batch: tuple[torch.Tensor, list[str]], batch_idx: int) -> torch.Tensor:
        x0, captions = batch
        b, _, f = x0.shape[:3]
        captions = ["" if random.random() < self.drop_p else c for c in captions]
        ctx = self.context(captions)
        t = torch.randint(0, self.alphas_cumprod.shape[0], (b, 1)).expand(b, f)
        diag = torch.rand(b, 1) < self.diag_p
        t = torch.where(diag, diagonal_timesteps(b, f, self.diag_max_step, self.alphas_cumprod.shape[0]), t)
        if self.anchor_p:
            anchored = torch.rand(b, 1) < self.anchor_p
            t = torch.where(anchored, anchored_timesteps(b, f, self.alphas_cumprod.shape[0]), t)
        t = t.to(x0.device)
        a = self.alphas_cumprod[t].view(b, 1, f, 1, 1)
        eps = torch.randn_like(x0)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        err = (self.unet(xt, t, ctx, fps=FPS) - eps) ** 2
        loss = err.mean()
        logs = {"mse": loss.detach()}
        if self.text_aux:
            keep = [i for i, c in enumerate(captions) if c]
            if keep:
                aux = self.caption_head.loss(ctx[keep], [captions[i] for i in keep])
                logs["text_aux"] = aux.detach()
                loss = loss + self.text_aux * aux
        logs["loss"] = loss
        self.log_dict(logs, prog_bar=True)
        return loss

    def ema_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        pairs = [(self.ema, self.unet)]
        if self.ema_text is not None:
            pairs.append((self.ema_text, self.text_model))
        return pairs

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        d = min(self.ema_decay, (1 + self.global_step) / (10 + self.global_step))
        with torch.no_grad():
            for ema, live in self.ema_pairs():
                for pe, p in zip(ema.parameters(), live.parameters(), strict=True):
                    pe.lerp_(p, 1 - d)

    def configure_optimizers(self):
        params = list(self.unet.parameters())
        if self.train_text:
            params += [p for p in self.text_model.parameters() if p.requires_grad]
        if self.text_aux:
            params += list(self.caption_head.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: cosine_lr(s, self.warmup, self.decay_steps, self.lr_floor))
        return [opt], [{"scheduler": sched, "interval": "step"}]
