"""The umbrella ``invariance`` console script: ``list``, ``check`` and ``reproduce`` over every
installed package, and ``invariance DOMAIN ...`` as a short form of ``invariance-DOMAIN ...``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

from invariance.core.cli import (
    UsageError,
    _flagify,
    _list,
    _quiet_third_party_warnings,
)
from invariance.core.report import (
    _check_rows,
    _check_table,
    _ensure_plot,
    _relpath,
    _reproduce_table,
    _write_reproduce,
)

__all__ = ["main", "umbrella_main"]

log = logging.getLogger("invariance")


def _umbrella_usage() -> str:
    return (
        "usage: invariance {list,check,reproduce,DOMAIN} [options]\n"
        "  invariance list                      every method of every installed package\n"
        "  invariance check [--domain D] [--method M]\n"
        "                                       every declared symmetry check (exit 1 on failure)\n"
        "  invariance reproduce --quick [--domain D] [--method M] [--out DIR]\n"
        "                                       every method's tiny analog: baseline vs method\n"
        "  invariance DOMAIN ...                the same as invariance-DOMAIN ..."
    )


def _selected(domain: str | None, method: str | None) -> list:
    from invariance.core.registry import list_methods

    ms = list_methods(domain)
    if method is not None:
        ms = [m for m in ms if m.name == method]
        if not ms:
            raise UsageError(f"no registered method {method!r}")
    if not ms:
        raise UsageError("no registered methods found (is any invariance-* package installed?)")
    return ms


def _umbrella_check(domain, method, quiet) -> int:
    from tqdm.auto import tqdm

    from invariance.core.recipe import make_config
    from invariance.core.seed import seed_everything

    rows: list[tuple] = []
    failed = False
    for info in tqdm(_selected(domain, method), desc="check", disable=None if not quiet else True):
        try:
            recipe = info.recipe()
            cfg = make_config(recipe, "tiny")
            seed_everything(cfg.seed)
            model = recipe.build(cfg)
            model.eval()
            results = recipe.check(model, cfg)
            rows += _check_rows(f"{info.domain}/{info.name}", results)
            failed |= not all(r.passed for r in results)
            if not results:
                rows.append(
                    (f"{info.domain}/{info.name}", "(no checks declared)", None, None, "", "FAIL")
                )
                failed = True
        except Exception as e:  # report and continue; the exit code says it failed
            rows.append(
                (
                    f"{info.domain}/{info.name}",
                    f"ERROR {type(e).__name__}: {e}",
                    None,
                    None,
                    "",
                    "FAIL",
                )
            )
            failed = True
    print(_check_table(rows))
    print(f"\n{sum(r[-1] == 'ok' for r in rows)} ok, {sum(r[-1] != 'ok' for r in rows)} failed")
    return 1 if failed else 0


def _umbrella_reproduce(domain, method, quick, out, quiet) -> int:
    from tqdm.auto import tqdm

    from invariance.core.io import make_run_dir
    from invariance.core.recipe import make_config
    from invariance.core.seed import seed_everything

    tag = "quick" if quick else "full"
    root = make_run_dir("all", f"reproduce-{tag}", out)
    items: list[tuple] = []
    bar = tqdm(_selected(domain, method), desc="reproduce", disable=None if not quiet else True)
    for info in bar:
        bar.set_postfix_str(f"{info.domain}/{info.name}")
        sub = make_run_dir(info.domain, info.name, root.path / f"{info.domain}-{info.name}")
        t0 = time.perf_counter()
        try:
            recipe = info.recipe()
            cfg = make_config(recipe, "tiny")
            seed_everything(cfg.seed)
            res = recipe.reproduce(cfg, sub, quick=quick)
            if not res.seconds:
                res.seconds = time.perf_counter() - t0
            _ensure_plot(res, sub.path, info.name)
            res.plots = [_relpath(p, root.path) for p in res.plots]
            items.append((info.domain, info.name, res))
        except Exception as e:  # keep going; reported as an ERROR row and a non-zero exit
            log.exception("reproduce failed for %s", info.name)
            items.append((info.domain, info.name, e))
    _write_reproduce(root, items, title=f"every method ({tag})")
    print(_reproduce_table(items))
    print(f"\nreport: {root.path / 'REPORT.md'}")
    return 1 if any(isinstance(r, BaseException) for _, _, r in items) else 0


def umbrella_main(argv: Sequence[str] | None = None) -> int:
    """The ``invariance`` command."""
    from jsonargparse import ArgumentParser

    from invariance.core.registry import domains, load_plugins

    _quiet_third_party_warnings()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args or args[0] in ("-h", "--help"):
            print(_umbrella_usage())
            return 0 if args else 2
        cmd, rest = args[0], args[1:]
        if cmd in domains():
            from importlib.metadata import entry_points

            (ep,) = [e for e in entry_points(group="invariance.cli") if e.name == cmd]
            return int(ep.load()(rest) or 0)
        if cmd not in ("list", "check", "reproduce"):
            raise UsageError(
                f"unknown command {cmd!r}; choose list, check, reproduce or a domain "
                f"({', '.join(domains()) or 'none installed'})"
            )
        p = ArgumentParser(prog=f"invariance {cmd}")
        p.add_argument("--domain", type=str | None, default=None)
        p.add_argument("--method", type=str | None, default=None)
        p.add_argument("--quiet", type=bool, default=False)
        if cmd == "reproduce":
            p.add_argument("--quick", type=bool, default=False)
            p.add_argument("--out", type=str | None, default=None)
        ns = p.parse_args(_flagify(rest, ("--quick", "--quiet")))
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if ns.domain is not None and ns.domain not in domains():
            raise UsageError(f"unknown domain {ns.domain!r}; installed: {', '.join(domains())}")
        load_plugins(ns.domain)
        if cmd == "list":
            print(_list(ns.domain))
            return 0
        if cmd == "check":
            return _umbrella_check(ns.domain, ns.method, ns.quiet)
        return _umbrella_reproduce(ns.domain, ns.method, ns.quick, ns.out, ns.quiet)
    except UsageError as e:
        print(_umbrella_usage(), file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 2


def main() -> int:
    return umbrella_main()


if __name__ == "__main__":
    raise SystemExit(main())
