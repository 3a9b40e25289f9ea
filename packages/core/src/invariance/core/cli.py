"""Command-line interfaces: ``build_cli(domain)`` for each package and the umbrella ``invariance``.

``invariance-<domain>`` has the subcommands::

    list                                   registered methods of the package
    train <method> [--size tiny|full] [--cfg.<field> V] [--config run/config.yaml] [--resume]
    eval <method> --ckpt RUN_DIR           metrics of a trained run on the test split
    check <method> [--ckpt RUN_DIR]        the declared symmetry checks (exit 1 on failure)
    reproduce <method> [--quick] [--details]  the paper-analog experiment: method vs baseline
    bench <name> [--<arg> V]               a registered benchmark

with the global flags ``--seed``, ``--device auto|cpu|cuda``, ``--out`` and ``--quiet``. Every run
writes its resolved ``config.yaml``; ``--config <run>/config.yaml`` replays it. Bad arguments exit
with code 2 and a usage line. The CLI holds no logic: it turns arguments into library calls.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from invariance.core.report import (
    _bench_text,
    _check_rows,
    _check_table,
    _ensure_plot,
    _keep_recipe_results,
    _relpath,
    _reproduce_details,
    _reproduce_table,
    _strip_config_key,
    _write_reproduce,
)

__all__ = ["build_cli", "umbrella_main"]

COMMANDS = ("list", "train", "eval", "check", "reproduce", "bench")
log = logging.getLogger("invariance")


def _quiet_third_party_warnings() -> None:
    """Hide a deprecation notice that PyG triggers at import on torch>=2.10 (not ours, not
    actionable for a user of the CLI)."""
    import warnings

    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )


class UsageError(Exception):
    """Bad command line: printed with a usage line, exit code 2."""


def _usage(prog: str) -> str:
    return (
        f"usage: {prog} {{list,train,eval,check,reproduce,bench}} [METHOD] [options]\n"
        f"  {prog} list\n"
        f"  {prog} train METHOD [--size tiny|full] [--cfg.FIELD VALUE] [--config FILE] [--resume]\n"
        f"  {prog} eval METHOD --ckpt RUN_DIR\n"
        f"  {prog} check METHOD [--ckpt RUN_DIR]\n"
        f"  {prog} reproduce METHOD [--quick] [--details] [--out DIR]\n"
        f"  {prog} bench NAME [--ARG VALUE]\n"
        f"  global options: --seed N --device auto|cpu|cuda --out DIR --quiet"
    )


def _option_value(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _presize(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--size" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--size="):
            return a.split("=", 1)[1]
    return "tiny"


def _method_parser(prog: str, command: str, info: Any, size: str, base_cfg: dict | None = None):
    from jsonargparse import ActionConfigFile, ArgumentParser

    recipe_cls = info.recipe
    presets = getattr(recipe_cls, "presets", {"tiny": {}})
    sizes = sorted(set(presets) | {"tiny"})
    if size not in sizes:
        raise UsageError(f"unknown --size {size!r} for {info.name}; choose from {sizes}")
    p = ArgumentParser(
        prog=f"{prog} {command} {info.name}", description=f"{command} {info.name}: {info.paper}"
    )
    p.add_argument("--config", action=ActionConfigFile, help="replay a saved config.yaml")
    p.add_argument("--size", type=str, default="tiny", help=f"preset: {', '.join(sizes)}")
    p.add_class_arguments(recipe_cls.Config, "cfg")
    p.set_defaults({f"cfg.{k}": v for k, v in presets.get(size, {}).items()})
    if base_cfg:
        p.set_defaults({f"cfg.{k}": v for k, v in base_cfg.items()})
    p.add_argument(
        "--method", type=str, default=info.name, help="the method a saved config belongs to"
    )
    p.add_argument("--seed", type=int | None, default=None, help="overrides cfg.seed")
    p.add_argument("--device", type=str, default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--out", type=str | None, default=None, help="run directory")
    p.add_argument("--quiet", type=bool, default=False, help="no progress bar")
    if command == "train":
        p.add_argument(
            "--resume", type=bool, default=False, help="continue from --out's checkpoint"
        )
    if command in ("eval", "check"):
        p.add_argument("--ckpt", type=str | None, default=None, help="run or checkpoint directory")
    if command == "reproduce":
        p.add_argument("--quick", type=bool, default=False, help="the tiny analog (< ~1 min)")
        p.add_argument(
            "--details", type=bool, default=False, help="also print per-seed values and details"
        )
    return p


def _flagify(argv: list[str], flags: Sequence[str]) -> list[str]:
    """Allow bare boolean flags (``--quick``) as well as ``--quick true``."""
    out = []
    for i, a in enumerate(argv):
        out.append(a)
        if a in flags and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append("true")
    return out


def _print(quiet: bool, *a: Any) -> None:
    """Results tables are always printed (``--quiet`` only silences logs and progress bars)."""
    print(*a, flush=True)


def _load_ckpt_model(recipe: Any, cfg: Any, ckpt: str | None):
    import torch  # noqa: F401

    from invariance.core.checkpoint import load_checkpoint

    model = recipe.build(cfg)
    if ckpt:
        path = Path(ckpt)
        if (path / "checkpoint").is_dir():
            path = path / "checkpoint"
        if not (path / "model.safetensors").exists():
            raise UsageError(f"--ckpt {ckpt}: no model.safetensors there")
        load_checkpoint(path, model)
    return model


def _run_config(ckpt: str | None) -> tuple[dict | None, str | None]:
    """``(cfg dict, method)`` saved in a run directory's ``config.yaml`` (``None`` when absent)."""
    import yaml

    if not ckpt:
        return None, None
    path = Path(ckpt)
    run = path.parent if path.name == "checkpoint" else path
    cfg_file = run / "config.yaml"
    if not cfg_file.exists():
        return None, None
    try:
        saved = yaml.safe_load(cfg_file.read_text()) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{cfg_file}: not a readable config ({e})") from None
    cfg = saved.get("cfg")
    return (dict(cfg) if isinstance(cfg, dict) else None), saved.get("method")


def _check_device(device: str) -> None:
    import torch

    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"--device {device!r} is not a device; use auto, cpu or cuda[:N]"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif dev.type != "cpu":
        raise UsageError(f"--device {device!r}: use auto, cpu or cuda[:N]")


#: config fields a resumed run may change (more steps, other logging/checkpoint periods)
RESUMABLE_CHANGES = ("steps", "ckpt_every", "log_every")


def _check_resume_config(run_path: Path, cfg: Any) -> None:
    import dataclasses

    import yaml

    cfg_file = run_path / "config.yaml"
    if not cfg_file.exists():
        raise UsageError(f"--resume: {cfg_file} does not exist (nothing to resume)")
    saved = (yaml.safe_load(cfg_file.read_text()) or {}).get("cfg") or {}
    now = dataclasses.asdict(cfg)
    diff = [
        k
        for k, v in now.items()
        if k in saved and k not in RESUMABLE_CHANGES and _norm(saved[k]) != _norm(v)
    ]
    if diff:
        parts = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in diff)
        raise UsageError(
            f"--resume with hyper-parameters that differ from the run's checkpoint ({parts}); "
            f"only {', '.join(RESUMABLE_CHANGES)} may change on resume: start a new run instead"
        )


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _config_from_ns(info: Any, ns: Any):
    from invariance.core.train import known_optimizers

    cfg_dict = ns.cfg.as_dict() if hasattr(ns.cfg, "as_dict") else dict(vars(ns.cfg))
    if ns.seed is not None:
        cfg_dict["seed"] = ns.seed
    try:
        cfg = info.recipe.Config(**cfg_dict)
    except (ValueError, TypeError) as e:
        raise UsageError(f"invalid config: {e}") from None
    opt = getattr(cfg, "optimizer", None)
    if opt is not None and opt not in known_optimizers():
        raise UsageError(
            f"invalid config: optimizer {opt!r} is unknown; choose from {known_optimizers()}"
        )
    return cfg


def _run_method_command(domain: str, prog: str, command: str, method: str, rest: list[str]) -> int:
    from invariance.core.dist import Runtime
    from invariance.core.io import make_run_dir
    from invariance.core.registry import get_method, list_methods
    from invariance.core.seed import seed_everything

    known = [m.name for m in list_methods(domain)]
    if method not in known:
        raise UsageError(f"unknown method {method!r} for {domain}; known: {', '.join(known)}")
    info = get_method(method)
    base_cfg = None
    if command in ("eval", "check"):
        ckpt_arg = _option_value(rest, "--ckpt")
        base_cfg, saved_method = _run_config(ckpt_arg)
        if saved_method is not None and saved_method != method:
            raise UsageError(
                f"--ckpt {ckpt_arg} is a run of method {saved_method!r}, not {method!r}"
            )
    parser = _method_parser(prog, command, info, _presize(rest), base_cfg)
    ns = parser.parse_args(_flagify(rest, ("--quiet", "--resume", "--quick", "--details")))
    if ns.method != method:
        raise UsageError(f"this config is for method {ns.method!r}, not {method!r}")
    _check_device(ns.device)
    cfg = _config_from_ns(info, ns)
    recipe = info.recipe()
    logging.basicConfig(
        level=logging.WARNING if ns.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )

    if command == "train":
        from invariance.core.checkpoint import latest_checkpoint
        from invariance.core.train import evaluate, fit_recipe

        if ns.resume:
            if not ns.out:
                raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
            _check_resume_config(Path(ns.out), cfg)
            if latest_checkpoint(ns.out) is None:
                raise UsageError(
                    f"--resume: no complete checkpoint in {Path(ns.out) / 'checkpoint'}; "
                    f"train without --resume to start a new run"
                )
        rt = Runtime.from_env(ns.device)
        try:
            run = make_run_dir(domain, method, ns.out, enabled=rt.is_main)
            if rt.is_main:
                saved = parser.dump(ns)
                (run.path / "config.yaml").write_text(_strip_config_key(saved))
            model, res = fit_recipe(
                recipe, cfg, runtime=rt, run=run, resume=ns.resume, progress=not ns.quiet
            )
            metrics = evaluate(recipe, model, cfg, "test")
            run.log_metrics({"step": res.step, "split": "test", **metrics})
            run.write_results(
                {
                    "method": method,
                    "step": res.step,
                    "train": res.last,
                    "test": metrics,
                    "seconds": res.seconds,
                }
            )
            if rt.is_main:
                from invariance.core._table import format_table

                _print(
                    ns.quiet,
                    format_table([(k, v) for k, v in metrics.items()], ["test metric", "value"]),
                )
                _print(ns.quiet, f"run directory: {run.path}")
        finally:
            rt.close()
        return 0

    if command == "eval":
        from invariance.core.train import evaluate

        if not ns.ckpt:
            raise UsageError("eval needs --ckpt RUN_DIR")
        seed_everything(cfg.seed)
        model = _load_ckpt_model(recipe, cfg, ns.ckpt)
        metrics = evaluate(recipe, model, cfg, "test")
        from invariance.core._table import format_table

        _print(
            ns.quiet, format_table([(k, v) for k, v in metrics.items()], ["test metric", "value"])
        )
        if ns.out:
            run = make_run_dir(domain, method, ns.out)
            run.write_results({"method": method, "test": metrics})
        return 0

    if command == "check":
        seed_everything(cfg.seed)
        model = _load_ckpt_model(recipe, cfg, ns.ckpt)
        model.eval()
        results = recipe.check(model, cfg)
        _print(ns.quiet, _check_table(_check_rows(method, results)))
        if not results:
            _print(ns.quiet, f"{method}: declares no symmetry checks")
        return 0 if all(r.passed for r in results) else 1

    if command == "reproduce":
        run = make_run_dir(domain, f"{method}-reproduce", ns.out)
        (run.path / "config.yaml").write_text(_strip_config_key(parser.dump(ns)))
        seed_everything(cfg.seed)
        t0 = time.perf_counter()
        started = time.time()
        res = recipe.reproduce(cfg, run, quick=ns.quick)
        if not res.seconds:
            res.seconds = time.perf_counter() - t0
        _keep_recipe_results(run, started)
        _ensure_plot(res, run.path, method)
        res.plots = [_relpath(p, run.path) for p in res.plots]
        _write_reproduce(run, [(domain, method, res)], title=f"{domain} / {method}")
        _print(ns.quiet, _reproduce_table([(domain, method, res)]))
        if ns.details:
            _print(ns.quiet, "\n" + _reproduce_details(res) + "\n")
        _print(ns.quiet, f"report: {run.path / 'REPORT.md'}")
        return 0
    raise UsageError(f"unknown command {command!r}")


def _run_bench(domain: str, prog: str, rest: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from invariance.core.bench import get_bench, list_benches
    from invariance.core.io import make_run_dir, to_jsonable

    if not rest or rest[0].startswith("-"):
        names = ", ".join(n for _, n in list_benches(domain)) or "none"
        raise UsageError(f"bench needs a NAME; known: {names}")
    name, rest = rest[0], rest[1:]
    try:
        fn = get_bench(domain, name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    p = ArgumentParser(prog=f"{prog} bench {name}", description=(fn.__doc__ or "").strip())
    p.add_function_arguments(fn, as_group=False)
    p.add_argument("--out", type=str | None, default=None)
    own_threads = "threads" not in _signature_defaults(fn)
    if own_threads:
        p.add_argument(
            "--threads", type=int | None, default=None, help="torch threads for the whole bench"
        )
    bool_flags = [f"--{k}" for k, v in _signature_defaults(fn).items() if isinstance(v, bool)]
    ns = p.parse_args(_flagify(rest, bool_flags))
    drop = ("out", "config", "threads") if own_threads else ("out", "config")
    kwargs = {k: v for k, v in ns.as_dict().items() if k not in drop}
    threads = ns.as_dict().get("threads") if own_threads else None
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)  # once, up front (see invariance.core.bench.compare)
    result = fn(**kwargs)
    print(_bench_text(result or {}))
    if ns.out:
        make_run_dir(domain, f"bench-{name}", ns.out).write_results(to_jsonable(result))
    return 0


def _signature_defaults(fn: Callable) -> dict:
    import inspect

    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _list(domain: str | None) -> str:
    from invariance.core._table import format_table
    from invariance.core.registry import list_methods

    rows = [
        (m.domain, m.name, f"{m.paper} ({m.year})", m.symmetry, m.baseline)
        for m in list_methods(domain)
    ]
    return format_table(rows, ["domain", "method", "paper", "declared symmetry", "baseline"])


def build_cli(domain: str) -> Callable[[Sequence[str] | None], int]:
    """The ``invariance-<domain>`` entry point (returns ``main(argv=None) -> exit code``)."""
    prog = f"invariance-{domain}"

    def main(argv: Sequence[str] | None = None) -> int:
        _quiet_third_party_warnings()
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            if not args or args[0] in ("-h", "--help"):
                print(_usage(prog))
                return 0 if args else 2
            cmd, rest = args[0], args[1:]
            if cmd not in COMMANDS:
                raise UsageError(f"unknown command {cmd!r}; choose from {', '.join(COMMANDS)}")
            from invariance.core.registry import load_plugins

            load_plugins(domain)
            if cmd == "list":
                print(_list(domain))
                return 0
            if cmd == "bench":
                return _run_bench(domain, prog, rest)
            if not rest or rest[0].startswith("-"):
                if rest and rest[0] in ("-h", "--help"):
                    print(_usage(prog))
                    return 0
                raise UsageError(f"{cmd} needs a METHOD (see `{prog} list`)")
            return _run_method_command(domain, prog, cmd, rest[0], rest[1:])
        except UsageError as e:
            print(_usage(prog), file=sys.stderr)
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Exception as e:
            from invariance.core.checkpoint import CheckpointError
            from invariance.core.train import ResumeError

            if isinstance(e, (CheckpointError, ResumeError)):  # one line, no traceback
                print(f"error: {e}", file=sys.stderr)
                return 2
            raise

    def entry() -> None:
        sys.exit(main())

    main.entry = entry  # type: ignore[attr-defined]
    return main


def umbrella_main(argv: Sequence[str] | None = None) -> int:
    """The ``invariance`` command (implemented in :mod:`invariance.core.umbrella`)."""
    from invariance.core.umbrella import umbrella_main as _main

    return _main(argv)
