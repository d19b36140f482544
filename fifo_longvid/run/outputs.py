"""The files that belong to one output name, and the one rule that cleans them up.

For an output ``out/fox.mp4`` a run may write, besides the video and its sidecar ``out/fox.json``:

* while running: a hidden temp video ``.fox.mp4.tmp-HOST-PID-RAND.mp4`` (renamed into place when complete),
  the resume state ``fox.mp4.state.pt`` (replaced through ``.fox.mp4.state.pt.tmp-HOST-PID-RAND``) and the
  latent log ``fox.mp4.latents.f32``;
* when interrupted: a playable ``fox.partial.mp4`` and its sidecar ``fox.partial.json``, next to the state;
* when asked: ``--save-latents`` / ``--save-frames`` outputs (never removed here).

The rule:

* A finished video leaves only the video, its sidecar and the ``--save-*`` outputs: the partial video, its
  sidecar, the state and the latent log of that name are deleted.
* A new run first deletes the stale temp files of the same output name: those whose writer (host, pid in the
  name) is this host's and no longer running. A live writer's files, another host's files and every file of
  another output name are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io.atomic import partial_path, remove_path, resolve_output, temp_owner, writer_alive
from ..io.sidecar import sidecar_path


@dataclass(frozen=True)
class OutputFiles:
    """The paths a run may create for one output (a video file, or a PNG folder)."""

    kind: str
    final: Path

    @classmethod
    def of(cls, output: str | Path) -> OutputFiles:
        return cls(*resolve_output(output))

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.final)

    @property
    def partial(self) -> Path:
        return partial_path(self.kind, self.final)

    @property
    def partial_sidecar(self) -> Path:
        return sidecar_path(self.partial)

    @property
    def state(self) -> Path:
        return self.final.parent / f"{self.final.name}.state.pt"

    @property
    def latent_log(self) -> Path:
        return self.final.parent / f"{self.final.name}.latents.f32"

    @property
    def latents(self) -> Path:
        """``--save-latents``: ``out/fox.latents.safetensors``."""
        return self.final.with_suffix(".latents.safetensors")

    @property
    def frames_dir(self) -> Path:
        """``--save-frames``: one PNG per output frame in ``out/fox_frames/``."""
        return self.final.parent / f"{self.final.stem}_frames"

    def resumable(self) -> list[Path]:
        """What an interrupted run keeps, for ``--resume`` and for viewing."""
        return [p for p in (self.state, self.latent_log, self.partial, self.partial_sidecar) if _exists(p)]

    def stale_temps(self, alive: Callable[[str, int], bool] = writer_alive) -> list[Path]:
        """Hidden temp files of this output name whose writer is gone (this host, pid not running)."""
        bases = {p.name for p in (self.final, self.sidecar, self.partial, self.partial_sidecar, self.state,
                                  self.latent_log)}
        parent = self.final.parent
        if not parent.is_dir():
            return []
        stale = []
        for entry in parent.iterdir():
            owner = temp_owner(entry.name, bases)
            if owner is not None and not alive(*owner):
                stale.append(entry)
        return sorted(stale)


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def remove_stale(final: Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Before a run: delete the stale temp files of this output name (see the module docstring)."""
    stale = OutputFiles.of(final).stale_temps()
    for p in stale:
        remove_path(p)
    if stale and log:
        n = len(stale)
        log(f"removed {n} stale temp file{'' if n == 1 else 's'} of {final.name} left by an earlier run")
    return stale


def remove_resumable(final: Path) -> None:
    """After a complete video, or when starting over: the partial, its sidecar, the state and the latent log."""
    for p in OutputFiles.of(final).resumable():
        remove_path(p)


def save_latents(path: Path, z: torch.Tensor) -> None:
    """``--save-latents``: the output latents, (1, C, F, h, w) float32, under the key ``latents``."""
    from safetensors.torch import save_file

    save_file({"latents": z.float().contiguous().cpu()}, str(path))


def save_frame_png(frames_dir: Path, frame: torch.Tensor, k: int) -> None:
    """``--save-frames``: output frame ``k`` ((3, H, W) in [-1, 1]) as ``frames_dir/0000k.png``."""
    from PIL import Image

    frames_dir.mkdir(parents=True, exist_ok=True)
    arr = ((frame.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(frames_dir / f"{k:05d}.png")
