"""fifo-gen batch: prompt files (every malformed case), naming, sharding, manifest, resume, concurrency, scripts."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fifo_longvid.batch.manifest import Manifest
from fifo_longvid.batch.runner import plan_batch, run_batch
from fifo_longvid.batch.sharding import Shard, parse_shard, shard_from_env, shard_items
from fifo_longvid.io.naming import item_hash, output_name, prompt_seed, slugify
from fifo_longvid.io.prompts import NO_I2V, BatchItem, PromptFileError, read_prompts
from fifo_longvid.io.sidecar import sidecar_path, write_json_atomic
from fifo_longvid.run.config import ConfigError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
TINY = {"model": "tiny", "mode": "fifo", "device": "cpu", "dtype": "auto", "fifo.num_frames": 2}
SMALL = ["fifo.window=4", "fifo.partitions=2", "sampling.height=64", "sampling.width=64"]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


def problems_of(path: Path, **kw) -> list[tuple[int, str]]:
    with pytest.raises(PromptFileError) as e:
        read_prompts(path, **kw)
    assert "nothing was generated" in str(e.value)
    return e.value.problems


# ------------------------------------------------------------------------------------------------ parsing


def test_txt_comments_blank_crlf_bom_unicode(tmp_path):
    p = write(tmp_path, "p.txt", b"\xef\xbb\xbf# a comment\r\na red fox\r\n\r\n   \n  # indented comment\n"
              + "un caf\u00e9 \u00e0 Paris  \n".encode() + b"a; semicolon prompt\nlast line without newline")
    items = read_prompts(p)
    assert [(i.index, i.line, i.prompt) for i in items] == [
        (0, 2, "a red fox"), (1, 6, "un caf\u00e9 \u00e0 Paris"), (2, 7, "a; semicolon prompt"),
        (3, 8, "last line without newline")]


def test_txt_bad_lines_all_reported(tmp_path):
    p = write(tmp_path, "p.txt", b"good one\n\xff\xfe broken\nimg/cat.png;a cat\nfox.jpg;\n" + b"x" * 2001 + b"\n")
    probs = problems_of(p)
    lines = [ln for ln, _ in probs]
    assert lines == [2, 3, 4, 4, 5]
    text = dict((ln, why) for ln, why in probs if ln != 4)
    assert "UTF-8" in text[2] and NO_I2V in text[3] and "at most" in text[5]
    assert {why for ln, why in probs if ln == 4} == {"empty prompt", NO_I2V}


def test_txt_image_lines_with_an_i2v_model(tmp_path):
    p = write(tmp_path, "p.txt", "img/cat.png;a cat\n/abs/dog.JPEG ; a dog\n")
    a, b = read_prompts(p, allow_images=True)
    assert (a.prompt, a.image) == ("a cat", str(tmp_path / "img" / "cat.png"))
    assert (b.prompt, b.image) == ("a dog", "/abs/dog.JPEG")


@pytest.mark.parametrize("name,content,needle", [
    ("empty.txt", "", "no prompts"),
    ("comments.txt", "# only\n\n", "no prompts"),
    ("p.yaml", "a: b", "unsupported prompt file type"),
    ("empty.csv", "", "no prompts"),
    ("missing.txt", None, "no such file"),
])
def test_file_level_errors(tmp_path, name, content, needle):
    p = tmp_path / name if content is None else write(tmp_path, name, content)
    probs = problems_of(p)
    assert any(needle in why for _, why in probs), probs


def test_csv_and_tsv_columns(tmp_path):
    csv_text = ('prompt,seed,num_frames,qcache,name,sampling.cfg\r\n'
                '"a fox, running",5,24,0.9,fox,7.5\r\n'
                '# a comment row\r\n'
                'a cat,,,,,\r\n')
    a, b = read_prompts(write(tmp_path, "p.csv", csv_text))
    assert (a.prompt, a.seed, a.num_frames, a.qcache, a.name, a.line) == ("a fox, running", 5, 24, 0.9, "fox", 2)
    assert a.overrides == {"sampling.cfg": "7.5"}
    assert (b.prompt, b.seed, b.num_frames, b.name, b.line, b.index) == ("a cat", None, None, None, 4, 1)
    (t,) = read_prompts(write(tmp_path, "p.tsv", "seed\tprompt\n3\ta dog, sleeping\n"))
    assert (t.prompt, t.seed) == ("a dog, sleeping", 3)


@pytest.mark.parametrize("content,line,needle", [
    ("text\nfoo\n", 1, "needs a 'prompt' column"),
    ("prompt,colour\nfoo,red\n", 1, "unknown column 'colour'"),
    ("prompt,seed,seed\nfoo,1,2\n", 1, "duplicate column seed"),
    ("prompt,seed\nfoo,1,2\n", 2, "3 fields, the header has 2"),
    ("prompt,seed\nfoo\n", 2, "1 fields, the header has 2"),
    ("prompt,seed\nfoo,abc\n", 2, "seed must be an integer"),
    ("prompt,seed\nfoo,-1\n", 2, "seed must be >= 0"),
    ("prompt,seed\nfoo,1.5\n", 2, "seed must be an integer"),
    ("prompt,num_frames\nfoo,0\n", 2, "num_frames must be >= 1"),
    ("prompt,qcache\nfoo,1.5\n", 2, "qcache must be in [0, 1]"),
    ("prompt,qcache\nfoo,high\n", 2, "qcache must be a number"),
    ("prompt,seed\n,4\n", 2, "empty prompt"),
    ("seed\n4\n", 1, "needs a 'prompt' column"),
    ("prompt,seed\n\"  \",4\n", 2, "empty prompt"),
    ("prompt,name\nfoo,x\nbar,x\n", 3, "already used on line 2"),
    ("prompt,name\nfoo,***\n", 2, "no letters or digits"),
    ("prompt,model.name\nfoo,x\n", 2, "cannot vary per item"),
    ("prompt,output.path\nfoo,x\n", 2, "cannot vary per item"),
    ("prompt,image\nfoo,cat.png\n", 2, "need an I2V model"),
    ('prompt,seed\n"foo,1\n', 2, "malformed row"),
])
def test_csv_malformed_lines(tmp_path, content, line, needle):
    probs = problems_of(write(tmp_path, "p.csv", content))
    assert any(ln == line and needle in why for ln, why in probs), probs


def test_csv_reports_every_bad_row_at_once(tmp_path):
    p = write(tmp_path, "p.csv", "prompt,seed,num_frames\nok,1,2\nbad,x,0\nfine,,\n,3,\nalso bad,1,2,3\n")
    probs = problems_of(p)
    assert [ln for ln, _ in probs] == [3, 3, 5, 6]  # line 3 has two problems, both reported


def test_jsonl(tmp_path):
    p = write(tmp_path, "p.jsonl", '{"prompt": "a fox", "seed": 4, "num_frames": 10}\n\n# c\n'
              '{"prompt": "a cat", "qcache": 0.5, "name": "kitty", "fifo.init": "uniform"}\r\n')
    a, b = read_prompts(p)
    assert (a.prompt, a.seed, a.num_frames, a.line) == ("a fox", 4, 10, 1)
    assert (b.qcache, b.name, b.overrides, b.line) == (0.5, "kitty", {"fifo.init": "uniform"}, 4)


@pytest.mark.parametrize("line,needle", [
    ('{"prompt": "a fox"', "invalid JSON"),
    ('["a fox"]', "expected a JSON object"),
    ('{"seed": 1}', "missing prompt"),
    ('{"prompt": 42}', "prompt must be text"),
    ('{"prompt": "x", "colour": "red"}', "unknown field 'colour'"),
    ('{"prompt": "x", "seed": true}', "seed must be an integer"),
    ('{"prompt": "x", "num_frames": "many"}', "num_frames must be an integer"),
    ('{"prompt": "x", "name": ""}', "name must be non-empty"),
    ('{"prompt": "x", "image": "a.png"}', "need an I2V model"),
    ('{"prompt": "x", "device": "cuda"}', "unknown field"),
])
def test_jsonl_malformed_lines(tmp_path, line, needle):
    probs = problems_of(write(tmp_path, "p.jsonl", '{"prompt": "fine"}\n' + line + "\n"))
    assert any(ln == 2 and needle in why for ln, why in probs), probs


# ------------------------------------------------------------------------------------------------ naming


def test_names_are_deterministic_and_safe():
    assert slugify("  A Red FOX, running!! caf\u00e9 ") == "a-red-fox-running-cafe"
    assert slugify("***") == "video" and len(slugify("x" * 100)) == 40
    h = item_hash("a fox", 1, {"cfg": 12})
    assert h == item_hash("a fox", 1, {"cfg": 12}) and len(h) == 10
    assert len({h, item_hash("a fox", 2, {"cfg": 12}), item_hash("a fox", 1, {"cfg": 7.5}),
                item_hash("a fix", 1, {"cfg": 12})}) == 4
    assert output_name(7, "../etc/passwd", h) == f"00007_etc-passwd_{h}.mp4"
    assert prompt_seed("a fox") == prompt_seed("a fox") and 0 <= prompt_seed("a fox") < 2**31


def items(n: int) -> list[BatchItem]:
    return [BatchItem(index=i, line=i + 1, prompt=f"prompt number {i}") for i in range(n)]


def test_plan_seeds_and_settings_change_the_name(tmp_path):
    its = items(3) + [BatchItem(index=3, line=4, prompt="seeded", seed=99)]
    no_seed = plan_batch(its, tmp_path, TINY, SMALL)
    assert [p.seed_source for p in no_seed] == ["prompt-hash"] * 3 + ["row"]
    assert no_seed[0].seed == prompt_seed("prompt number 0") and no_seed[3].seed == 99
    based = plan_batch(its, tmp_path, {**TINY, "sampling.seed": 10}, SMALL)
    assert [p.seed for p in based] == [10, 11, 12, 99]
    again = plan_batch(its, tmp_path, {**TINY, "sampling.seed": 10}, SMALL)
    assert [p.name for p in again] == [p.name for p in based]
    other = plan_batch(its, tmp_path, {**TINY, "sampling.seed": 10}, SMALL + ["sampling.cfg=7.5"])
    assert all(a.name != b.name for a, b in zip(based, other, strict=True))
    assert based[0].name.startswith("00000_prompt-number-0_") and based[0].name.endswith(".mp4")
    # settings that do not change the video keep the name
    same = plan_batch(its, tmp_path, {**TINY, "sampling.seed": 10, "fifo.max_batch": "2"}, SMALL)
    assert [p.name for p in same] == [p.name for p in based]


def test_plan_reports_bad_settings_per_line(tmp_path):
    its = [BatchItem(0, 1, "ok"), BatchItem(1, 2, "bad", overrides={"sampling.cfgg": "3"}),
           BatchItem(2, 5, "bad too", overrides={"fifo.window": "3"})]
    with pytest.raises(PromptFileError) as e:
        plan_batch(its, tmp_path, TINY, SMALL, prompt_file="p.csv")
    assert [ln for ln, _ in e.value.problems] == [2, 5]
    assert "cfgg" in e.value.problems[0][1] and "even window" in e.value.problems[1][1]


# ------------------------------------------------------------------------------------------------ sharding


@pytest.mark.parametrize("n", range(1, 8))
def test_every_item_in_exactly_one_shard(n):
    its = items(23)
    seen = [it.index for k in range(n) for it in shard_items(its, Shard(k, n))]
    assert sorted(seen) == list(range(23))
    sizes = [len(shard_items(its, Shard(k, n))) for k in range(n)]
    assert max(sizes) - min(sizes) <= 1


def test_shard_from_env_and_flag():
    assert parse_shard("2/5") == Shard(2, 5, "--shard")
    for bad in ("5/5", "-1/3", "1/0", "x", "1-3"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)
    assert shard_from_env({}) == Shard(0, 1, "single")
    s = shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"})
    assert (s.index, s.count) == (2, 4)
    s = shard_from_env({"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "3", "SLURM_NTASKS": "3"})
    assert (s.index, s.count) == (1, 3)
    s = shard_from_env({"RANK": "1", "WORLD_SIZE": "2"})
    assert (s.index, s.count, s.source) == (1, 2, "torchrun")
    s = shard_from_env({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_PROCID": "1",
                        "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"})
    assert (s.index, s.count) == (5, 6)
    # every (array task, process) pair gets a distinct shard
    pairs = {shard_from_env({"SLURM_ARRAY_TASK_ID": str(a), "SLURM_ARRAY_TASK_COUNT": "3", "RANK": str(r),
                             "WORLD_SIZE": "2"}).index for a in range(3) for r in range(2)}
    assert pairs == set(range(6))


# ------------------------------------------------------------------------------------------------ running


class FakeGenerate:
    """Stands in for pipeline.generate: same file contract (video then complete sidecar), no model."""

    def __init__(self, fail=(), kill_at=None, delay=0.0, log_file=None):
        self.calls: list[str] = []
        self.fail, self.kill_at, self.delay, self.log_file = set(fail), kill_at, delay, log_file

    def __call__(self, cfg, model=None, progress=None, log=None):
        from fifo_longvid.run.pipeline import GenerationResult

        out = Path(cfg.output.path)
        self.calls.append(out.name)
        if self.log_file:
            with open(self.log_file, "a") as f:
                f.write(out.name + "\n")
        prompt = cfg.prompts[0]
        if prompt in self.fail:
            from fifo_longvid.diffusion.sampling import NonFiniteError

            raise NonFiniteError("NaN/inf in the latents at FIFO iteration 3")
        if not cfg.output.overwrite and out.exists():
            raise FileExistsError(out)
        tmp = out.with_name("." + out.name + ".tmp")
        tmp.write_bytes(b"video of " + prompt.encode())
        time.sleep(self.delay)
        if self.kill_at == prompt:
            raise SystemExit("killed")  # like SIGKILL mid-item: only a hidden temp file is left
        tmp.replace(out)
        side = write_json_atomic(sidecar_path(out), {"prompt": prompt, "complete": True, "frames_written": 2})
        return GenerationResult(out, 2, cfg.sampling.seed, side, {"total_s": 0.01, "fifo_s": 0.01})


def plan(tmp_path, n=5, fmt_flags=None):
    return plan_batch(items(n), tmp_path / "out", fmt_flags or {**TINY, "sampling.seed": 1}, SMALL)


def view(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def test_failures_recorded_and_the_batch_goes_on(tmp_path):
    planned = plan(tmp_path)
    gen = FakeGenerate(fail={"prompt number 1", "prompt number 3"})
    s = run_batch(planned, tmp_path / "out", Shard(0, 1), None, generate_fn=gen, log=lambda m: None)
    assert (s.done, s.failed, s.skipped, s.exit_code) == (3, 2, 0, 1)
    recs = view(tmp_path / "out")
    assert [r["status"] for r in recs] == ["done", "failed", "done", "failed", "done"]
    assert recs[1]["error"].startswith("NonFiniteError: NaN/inf") and recs[0]["error"] is None
    assert all(k in recs[0] for k in ("output", "seed", "started", "finished", "seconds", "timings", "hash"))
    # --fail-fast stops at the first failure
    gen2 = FakeGenerate(fail={"prompt number 0"})
    s2 = run_batch(plan(tmp_path / "b"), tmp_path / "b" / "out", Shard(0, 1), None, fail_fast=True,
                   generate_fn=gen2, log=lambda m: None)
    assert (s2.done, s2.failed) == (0, 1) and len(gen2.calls) == 1


def test_resume_after_a_kill_redoes_nothing_complete(tmp_path):
    planned = plan(tmp_path)
    out = tmp_path / "out"
    gen = FakeGenerate(kill_at="prompt number 2")
    with pytest.raises(SystemExit):
        run_batch(planned, out, Shard(0, 1), None, generate_fn=gen, log=lambda m: None)
    assert [r["status"] for r in view(out)] == ["done", "done", "running"]
    # a crash between the video's rename and the manifest record: found complete on disk
    gen_done = FakeGenerate()
    gen_done(planned[3].cfg)
    gen2 = FakeGenerate()
    s = run_batch(planned, out, Shard(0, 1), None, generate_fn=gen2, log=lambda m: None)
    assert gen2.calls == [planned[2].name, planned[4].name]
    assert (s.done, s.skipped, s.failed) == (2, 3, 0)
    recs = view(out)
    assert [r["status"] for r in recs] == ["done"] * 5 and recs[3].get("recovered")
    gen3 = FakeGenerate()
    s = run_batch(planned, out, Shard(0, 1), None, generate_fn=gen3, log=lambda m: None)
    assert gen3.calls == [] and s.skipped == 5
    # a changed setting is a different item (new name), never mistaken for the old result
    changed = plan_batch(items(5), out, {**TINY, "sampling.seed": 1}, SMALL + ["sampling.eta=0.5"])
    gen4 = FakeGenerate()
    run_batch(changed, out, Shard(0, 1), None, generate_fn=gen4, log=lambda m: None)
    assert len(gen4.calls) == 5 and len(view(out)) == 10


def test_manifest_survives_a_torn_line(tmp_path):
    m = Manifest(tmp_path, Shard(0, 1))
    m.append({"name": "a", "index": 0, "status": "done"})
    with open(m.path, "a") as f:
        f.write('{"name": "b", "ind')  # killed mid-write
    m.append({"name": "c", "index": 2, "status": "done"})
    assert [r["name"] for r in m.rewrite_view()] == ["a", "c"]


def _shard_worker(planned, out, k, n, log_file):
    gen = FakeGenerate(delay=0.02, log_file=log_file)
    run_batch(shard_items(planned, Shard(k, n)), out, Shard(k, n), None, generate_fn=gen, log=lambda m: None)


def test_two_concurrent_shards_share_an_out_dir(tmp_path):
    planned = plan(tmp_path, n=12)
    out = tmp_path / "out"
    log_file = tmp_path / "calls.log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_shard_worker, args=(planned, out, k, 2, log_file)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    calls = log_file.read_text().split()
    assert sorted(calls) == sorted(p.name for p in planned)  # every item exactly once
    recs = view(out)
    assert [r["index"] for r in recs] == list(range(12)) and all(r["status"] == "done" for r in recs)
    assert {r["shard"] for r in recs} == {"0/2", "1/2"}
    for k in range(2):
        lines = (out / f"manifest.shard-{k}-of-2.jsonl").read_text().splitlines()
        assert {json.loads(x)["index"] % 2 for x in lines} == {k}
    for p in planned:
        assert p.output.read_bytes() == f"video of {p.item.prompt}".encode()
    assert not [f for f in out.iterdir() if f.name.endswith(".tmp")]


def test_same_shard_twice_is_refused(tmp_path):
    m = Manifest(tmp_path, Shard(1, 3))
    with m.shard_lock():
        with pytest.raises(ConfigError, match="already running"):
            run_batch([], tmp_path, Shard(1, 3), None, generate_fn=FakeGenerate())


# ------------------------------------------------------------------------------------------------ CLI + scripts


def test_cli_batch_on_the_tiny_model_then_rerun_skips(tmp_path, monkeypatch):
    from fifo_longvid.cli.main import app
    from fifo_longvid.run import pipeline

    prompts = write(tmp_path, "prompts.txt", "# two videos\na red fox running\n\na blue car\n")
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--config", "tiny", "--num-frames", "2", "--out-dir", str(out), "--seed", "5",
            "--device", "cpu", *SMALL]
    runner = CliRunner()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = view(out)
    assert [r_["status"] for r_ in recs] == ["done", "done"] and [r_["seed"] for r_ in recs] == [5, 6]
    assert all(Path(r_["output"]).is_file() and r_["frames"] == 2 for r_ in recs)
    assert "done" in r.output and "skipped" in r.output and "s/frame" in r.output

    def boom(*a, **k):
        raise AssertionError("nothing should be generated again")

    monkeypatch.setattr(pipeline, "generate", boom)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    row = [ln for ln in r.output.splitlines() if "│" in ln and any(c.isdigit() for c in ln)][-1]
    assert [c.strip() for c in row.split("│")[1:4]] == ["0", "2", "0"]  # done, skipped, failed


def test_cli_batch_failures_exit_nonzero_and_bad_file_generates_nothing(tmp_path, monkeypatch):
    from fifo_longvid.cli.main import app
    from fifo_longvid.run import pipeline

    runner = CliRunner()
    bad = write(tmp_path, "bad.csv", "prompt,seed\nok,1\n,2\nfine,x\n")
    r = runner.invoke(app, ["batch", str(bad), "--config", "tiny", "--out-dir", str(tmp_path / "o1")])
    assert r.exit_code == 2 and "bad.csv:3" in r.output and "bad.csv:4" in r.output
    assert not (tmp_path / "o1").exists()

    monkeypatch.setattr(pipeline, "generate", FakeGenerate(fail={"b"}))
    good = write(tmp_path, "g.txt", "a\nb\nc\n")
    r = runner.invoke(app, ["batch", str(good), "--config", "tiny", "--out-dir", str(tmp_path / "o2")])
    assert r.exit_code == 1 and "NonFiniteError" in r.output
    assert [x["status"] for x in view(tmp_path / "o2")] == ["done", "failed", "done"]
    r = runner.invoke(app, ["batch", "--help"])
    for opt in ("--out-dir", "--shard", "--fail-fast", "--num-frames", "--qcache", "--seed", "--max-batch"):
        assert opt in r.output


@pytest.mark.parametrize("script", ["slurm_batch.sbatch", "slurm_multigpu.sbatch", "run_prompts.sh"])
def test_scripts_parse_and_document_usage(script):
    path = SCRIPTS / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "Usage:" in path.read_text()


def test_image_lines_with_an_i2v_model_and_a_missing_image_fail_only_that_item(tmp_path):
    """tiny_i2v takes `image;prompt` lines; a missing image is that item's failure (recorded), not the batch's."""
    p = write(tmp_path, "p.txt", "nowhere/cat.png;a cat\n")
    its = read_prompts(p, allow_images=True)
    planned = plan_batch(its, tmp_path / "out", {**TINY, "model": "tiny_i2v"}, SMALL)
    s = run_batch(planned, tmp_path / "out", Shard(0, 1), None, log=lambda m: None)  # the real generate
    assert (s.failed, s.exit_code) == (1, 1)
    (rec,) = view(tmp_path / "out")
    assert rec["status"] == "failed" and "no such file" in rec["error"] and rec["error"].startswith("ConfigError")


def test_killed_batch_process_rerun_redoes_nothing_complete(tmp_path, monkeypatch):
    """SIGKILL a real `fifo-gen batch` after its first video, re-run: only the rest is generated."""
    import os
    import signal
    import sys

    from fifo_longvid.cli.main import app
    from fifo_longvid.run import pipeline

    prompts = write(tmp_path, "p.txt", "a red fox\na blue car\na green tree\n")
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--config", "tiny", "--num-frames", "2", "--out-dir", str(out), "--seed", "1",
            "--device", "cpu", *SMALL]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "fifo_longvid", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    shard_file = out / "manifest.shard-0-of-1.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if shard_file.exists() and '"done"' in shard_file.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {json.loads(x)["name"] for x in shard_file.read_text().splitlines() if '"done"' in x}
    assert len(done_before) >= 1
    first = sorted(done_before)[0]
    mtime = (out / first).stat().st_mtime_ns

    real = pipeline.generate
    calls = []

    def counting(cfg, **kw):
        calls.append(Path(cfg.output.path).name)
        return real(cfg, **kw)

    monkeypatch.setattr(pipeline, "generate", counting)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert not set(calls) & done_before and len(calls) == 3 - len(done_before)
    assert (out / first).stat().st_mtime_ns == mtime
    recs = view(out)
    assert [x["status"] for x in recs] == ["done"] * 3 and len({x["name"] for x in recs}) == 3
