"""Reference docs generated from the code, so they cannot drift from it.

- docs/config.md and `mamql config show --explain`: every config field with its type, default (or
  resolved value) and meaning, from the attribute docstrings under the fields in mamql/config.py
  (read with ast: the string literal right below a field is its doc, as Sphinx reads them).
- docs/metrics.md: every Prometheus metric each process exports, with type, labels and meaning, read
  from the registries of a replay, a learner and an actor built as their commands build them (not
  started: no port is bound, nothing connects). A metric added to any of them appears here without
  touching this module.

    python -m mamql.docgen config --write     # or metrics; --check exits 1 when the file is stale

tests/mamql/test_docs_generated.py runs the check, and checks that the Grafana dashboards and the
Prometheus rules query only metrics listed in docs/metrics.md.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from mamql import config as config_module
from mamql.config import Config, TableConfig, to_dict

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"config": ROOT / "docs" / "config.md", "metrics": ROOT / "docs" / "metrics.md"}
COMMANDS = {"config": "python -m mamql.docgen config --write", "metrics": "python -m mamql.docgen metrics --write"}

# --------------------------------------------------------------------------- config fields


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field: doc} of a config dataclass: the string literal right below each field, on one line."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def undocumented_fields() -> list[str]:
    """`section.field` of every config field without a docstring (a test keeps this empty)."""
    missing = [name for name in _field_names(Config) if not field_docs(Config).get(name)]
    for section in dataclasses.fields(Config):
        cls = _section_class(section.name)
        missing += [f"{section.name}.{f}" for f in _field_names(cls) if not field_docs(cls).get(f)]
    missing += [f"replay.tables[].{f}" for f in _field_names(TableConfig) if not field_docs(TableConfig).get(f)]
    return missing


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _section_class(name: str) -> type:
    hint = Config.__dataclass_fields__[name].type  # a string under `from __future__ import annotations`
    return hint if isinstance(hint, type) else getattr(config_module, hint)


def _class_doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def type_name(annotation: Any) -> str:
    """The type as a YAML user writes it: tuple[int, ...] -> list[int], dict -> mapping."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = re.sub(r"tuple\[(\w+), \.\.\.\]", r"list[\1]", text)
    return text.replace("TableConfig", "table").replace("dict", "mapping")


def yaml_value(value: Any) -> str:
    """A value as it would be written in the YAML file or after `--set key=` (flow style, one line)."""
    import yaml

    text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=1 << 30, sort_keys=False).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text


def _table_value(table: TableConfig) -> dict:
    """A table entry as its YAML needs it: the name, then only what differs from a table's defaults."""
    base = TableConfig()
    out = {"name": table.name}
    out.update({f.name: to_dict(getattr(table, f.name)) for f in dataclasses.fields(TableConfig)
                if f.name != "name" and getattr(table, f.name) != getattr(base, f.name)})
    return out


# --------------------------------------------------------------------------- config show --explain


def explain_config(config: Config, width: int = 100) -> str:
    """Every field of `config` with its value, type and doc; the default too where the value differs."""
    default = Config()
    lines = ["# mamql configuration: each field's value (type; default where it differs) and meaning.",
             "# Change one with --set section.key=value; docs/config.md has the same text.", ""]

    def doc_lines(doc: str, indent: int) -> None:
        lines.extend(textwrap.wrap(doc, width, initial_indent=" " * indent, subsequent_indent=" " * indent))

    for section in dataclasses.fields(Config):
        cls = _section_class(section.name)
        docs = field_docs(cls)
        lines.append(f"{section.name}:")
        doc_lines(_class_doc(cls), 2)
        values, defaults = getattr(config, section.name), getattr(default, section.name)
        for f in dataclasses.fields(cls):
            value, default_value = getattr(values, f.name), getattr(defaults, f.name)
            key = f"{section.name}.{f.name}"
            if f.name == "tables":
                names = ", ".join(t.name for t in value) or "none"
                lines.append(f"  {key} = {len(value)} table(s): {names}  ({type_name(f.type)})")
                doc_lines(docs.get(f.name, ""), 6)
                table_docs = field_docs(TableConfig)
                for tf in dataclasses.fields(TableConfig):
                    per_table = ", ".join(yaml_value(getattr(t, tf.name)) if tf.name == "name"
                                          else f"{t.name}: {yaml_value(getattr(t, tf.name))}" for t in value)
                    lines.append(f"    {key}[].{tf.name} = {per_table or '-'}  ({type_name(tf.type)})")
                    doc_lines(table_docs.get(tf.name, ""), 8)
                continue
            note = "" if value == default_value else f"; default {yaml_value(default_value)}"
            lines.append(f"  {key} = {yaml_value(value)}  ({type_name(f.type)}{note})")
            doc_lines(docs.get(f.name, ""), 6)
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- docs/config.md


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(*cells: str) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def config_markdown() -> str:
    """docs/config.md: a table per section, with the built-in defaults."""
    default = Config()
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMANDS['config']}` from the docstrings under the fields in mamql/config.py:",
        "edit those, not this file (tests/mamql/test_docs_generated.py fails when it is stale). -->",
        "",
        "One YAML file configures every process of a run, in the sections below. Any command takes",
        "`--config FILE` and `--set section.key=value` (the value is YAML: `--set learner.hidden=[64,64]`);",
        "unknown keys and wrong types are refused before anything starts. `mamql config show` prints the",
        "resolved file, `mamql config show --explain` each field with its value and the text below.",
        "",
    ]
    for section in dataclasses.fields(Config):
        cls = _section_class(section.name)
        docs, values = field_docs(cls), getattr(default, section.name)
        out += [f"## `{section.name}`", "", _class_doc(cls), "", _row("key", "type", "default", "meaning"),
                "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            value = "the two tables below" if f.name == "tables" else f"`{yaml_value(getattr(values, f.name))}`"
            out.append(_row(f"`{section.name}.{f.name}`", type_name(f.type), value, docs.get(f.name, "")))
        out.append("")
        if section.name == "replay":
            out += _tables_markdown(values.tables)
    return "\n".join(out)


def _tables_markdown(tables: tuple[TableConfig, ...]) -> list[str]:
    docs, base = field_docs(TableConfig), TableConfig()
    out = ["The default `replay.tables`:", "", "```yaml", "replay:", "  tables:"]
    out += [f"    - {yaml_value(_table_value(t))}" for t in tables]
    out += ["```", "", "### `replay.tables[]`: one table", "", _class_doc(TableConfig),
            "A key that an entry leaves out takes the default in this table.", "",
            _row("key", "type", "default", "meaning"), "|---|---|---|---|"]
    for f in dataclasses.fields(TableConfig):
        out.append(_row(f"`{f.name}`", type_name(f.type), f"`{yaml_value(getattr(base, f.name))}`",
                        docs.get(f.name, "")))
    return out + [""]


# --------------------------------------------------------------------------- metrics

PROCESSES = {"replay": "`mamql replay`", "learner": "`mamql learner`", "actor": "`mamql actor`"}
SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
                   "info": ("_info",)}


@dataclasses.dataclass(frozen=True)
class MetricDoc:
    name: str  # the family name (a counter's without _total, as prometheus_client keeps it)
    type: str
    labels: tuple[str, ...]
    doc: str
    buckets: tuple[float, ...] = ()

    @property
    def series(self) -> tuple[str, ...]:
        """The names a query uses: a counter's `_total`, a histogram's `_bucket`, `_sum`, `_count`."""
        return tuple(self.name + s for s in SERIES_SUFFIXES.get(self.type, ("",)))


def registry_metrics(registry) -> list[MetricDoc]:
    """Every metric registered on a prometheus_client registry, labelled ones included (a labelled
    metric without children exports no sample, so its label names come from the metric object)."""
    out = {}
    for collector in list(registry._collector_to_names):  # no public way to list collectors
        if hasattr(collector, "_labelnames") and hasattr(collector, "_type"):  # Counter, Gauge, Histogram, ...
            buckets = tuple(b for b in getattr(collector, "_upper_bounds", ()) if b != float("inf"))
            metric = MetricDoc(collector._name, collector._type, tuple(collector._labelnames),
                               collector._documentation, buckets)
            out[metric.name] = metric
            continue
        for family in collector.collect():  # custom collectors (process_*, python_info)
            labels = sorted({k for s in family.samples for k in s.labels} - {"le", "quantile"})
            out[family.name] = MetricDoc(family.name, family.type, tuple(labels), family.documentation)
    return sorted(out.values(), key=lambda m: m.name)


def process_metrics() -> dict[str, list[MetricDoc]]:
    """{process: its metrics}: a replay, a learner and an actor built as their commands build them, on a
    default config, each with a fresh registry, and never started."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mamql-docgen-") as tmp:
        return {"replay": registry_metrics(_replay_registry()),
                "learner": registry_metrics(_learner_registry(Path(tmp))),
                "actor": registry_metrics(_actor_registry())}


UNREACHABLE = "127.0.0.1:9"  # nothing is sent: the clients below are built and closed, never used


def _replay_registry():
    from mamql.metrics import new_registry
    from mamql.replay.server import ReplayServer

    registry = new_registry()
    server = ReplayServer(Config(), registry=registry)  # as `mamql replay`, without start()
    server.replay.close()
    return registry


def _learner_registry(tmp: Path):
    from mamql.learner.demos import collect_demos, save_demos
    from mamql.learner.service import LearnerService
    from mamql.metrics import new_registry

    config = Config()
    demos, summary = collect_demos(config.env.name, 64, num_envs=1, env_kwargs=config.env.kwargs)
    path = save_demos(tmp / "demos.npz", demos, summary)
    registry = new_registry()
    service = LearnerService(config, UNREACHABLE, str(path), registry=registry, run_dir=str(tmp / "run"))
    service.client.close()
    return registry


def _actor_registry():
    from mamql.actors.actor import Actor
    from mamql.actors.cli import open_writer
    from mamql.actors.weight_subscriber import WeightSubscriber
    from mamql.config import with_updates
    from mamql.metrics import new_registry
    from mamql.protos.rpc import Security
    from mamql.replay.client import ReplayClient

    config = with_updates(Config(), actor={"num_envs": 1})
    registry = new_registry()
    client = ReplayClient(UNREACHABLE, Security(), config.replay.max_message_mb)
    writer = open_writer(client, config, registry)
    subscriber = WeightSubscriber(UNREACHABLE, "actor-0", Security(), config.weights.max_message_mb, registry)
    Actor(config, 0, writer, subscriber, registry)  # as `mamql actor` in learned mode; the subscriber never starts
    writer.close(timeout=0)
    client.close()
    return registry


def _number(x: float) -> str:
    return f"{x:g}".replace("e+0", "e").replace("e+", "e")  # 1e6, not 1e+06


def metrics_markdown(by_process: dict[str, list[MetricDoc]] | None = None) -> str:
    """docs/metrics.md: a section per process, and one for what every process exports."""
    by_process = process_metrics() if by_process is None else by_process
    names = [{m.name for m in metrics} for metrics in by_process.values()]
    everywhere = set.intersection(*names) if names else set()
    out = [
        "# Metrics reference",
        "",
        f"<!-- Generated by `{COMMANDS['metrics']}` from the registries of a replay, a learner and an actor:",
        "a new metric appears after regenerating (tests/mamql/test_docs_generated.py fails while this is stale). -->",
        "",
        "Every process serves Prometheus text on `http://<metrics.host>:<metrics.port>/metrics`",
        "(deploy/README.md has the ports). Names follow `mamql_<component>_<what>_<unit>`; the *series* column",
        "holds the names a query uses: a counter's `_total`, a histogram's `_bucket` (label `le`), `_sum` and",
        "`_count`, a summary's `_sum` and `_count`. Counters, histograms and summaries also export",
        "`<name>_created` (creation time, from prometheus_client). Prometheus adds `up` and the target labels of",
        "the scrape config (`component`, `instance`, `run`) itself. The Grafana dashboard",
        "(deploy/grafana/dashboards/) and the Prometheus rules (deploy/prometheus/rules/) query only these.",
        "",
    ]
    every = {m.name: m for metrics in by_process.values() for m in metrics if m.name in everywhere}
    sections = [(f"{name.capitalize()} ({command})", [m for m in by_process[name] if m.name not in everywhere])
                for name, command in PROCESSES.items() if name in by_process]
    sections.append(("Every process", sorted(every.values(), key=lambda m: m.name)))
    for title, metrics in sections:
        out += [f"## {title}", "", _row("series", "type", "labels", "meaning"), "|---|---|---|---|"]
        for m in metrics:
            meaning = m.doc.rstrip(".") + "."
            if m.buckets:
                meaning += f" Buckets: {', '.join(_number(b) for b in m.buckets)}."
            out.append(_row(", ".join(f"`{s}`" for s in m.series), m.type,
                            ", ".join(f"`{label}`" for label in m.labels) or "-", meaning))
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- command line


def generate(which: str) -> str:
    return config_markdown() if which == "config" else metrics_markdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mamql.docgen", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("doc", choices=("config", "metrics", "all"), help="which reference to generate")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the file (default: print it)")
    mode.add_argument("--check", action="store_true", help="exit 1 when the file differs from the code")
    parser.add_argument("--out", type=Path, default=None, help="file to write or check (default: docs/<doc>.md)")
    args = parser.parse_args(argv)
    which = ["config", "metrics"] if args.doc == "all" else [args.doc]
    if args.doc == "all" and args.out is not None:
        parser.error("--out names one file: give config or metrics")
    if args.doc == "all" and not (args.write or args.check):
        parser.error("all needs --write or --check")
    stale = []
    for doc in which:
        text = generate(doc)
        path = args.out or DOCS[doc]
        if args.check:
            current = path.read_text() if path.exists() else None
            if current != text:
                stale.append(f"{path} is {'missing' if current is None else 'stale'}: run `{COMMANDS[doc]}`")
        elif args.write:
            if not path.parent.is_dir():
                parser.error(f"{path.parent} does not exist (a source checkout has docs/; or give --out)")
            path.write_text(text)
            print(f"wrote {path}")
        else:
            sys.stdout.write(text)
    for line in stale:
        print(line, file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
