"""The ``kundenwert`` command."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kundenwert.errors import KundenwertError

try:  # newer typer carries its own copy of click (typer._click)
    from typer._click.globals import get_current_context
    from typer.exceptions import TyperException as ClickError
except ImportError:  # pragma: no cover - older typer: click itself
    from click import ClickException as ClickError  # type: ignore[assignment,unused-ignore]
    from click import get_current_context  # type: ignore[assignment,no-redef,unused-ignore]

app = typer.Typer(
    name="kundenwert",
    help="Campaign and customer analytics for CRM data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="Real data sets in the CRM contract format.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
keys_app = typer.Typer(help="API keys with roles.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(help="The store's schema: Alembic migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console()
err = Console(stderr=True)


# sysexits.h: EX_SOFTWARE, an internal software error; 130 is the shell's code for Ctrl-C (128 + SIGINT)
EXIT_BUG = 70
EXIT_INTERRUPTED = 130


def _command_name() -> str:
    """``kundenwert import``, ``kundenwert keys create``: the command being run, however it was started."""
    ctx = get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:  # the root's name is the program (python -m ...)
        if ctx.info_name:
            names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["kundenwert", *reversed(names)])


def _debug() -> bool:
    """``KUNDENWERT_DEBUG`` is set: show tracebacks (read even when other settings are invalid)."""
    from kundenwert.settings import debug_enabled

    return debug_enabled()


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Our own errors as one plain line (exit code of the error); anything else as one line naming
    the command and the error (exit 70; the traceback only with ``KUNDENWERT_DEBUG=1``); Ctrl-C as
    ``interrupted`` (exit 130). ``typer.Exit`` and click's own exceptions pass through untouched."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KundenwertError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, ClickError, SystemExit):  # typer's and click's own: untouched
            raise
        except KeyboardInterrupt:
            err.print(f"{_command_name()}: interrupted", markup=False, highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            debug = _debug()
            if debug:
                err.print(traceback.format_exc(), markup=False, highlight=False, end="")
            hint = "" if debug else ", with KUNDENWERT_DEBUG=1 for the traceback"
            err.print(
                f"[bold red]error:[/] {_command_name()}: unexpected error "
                f"({escape(type(exc).__name__ + ': ' + str(exc))}); this is a bug: please report it{hint}",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_BUG) from None

    return wrapper


@app.command("sample")
@friendly
def sample_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder to write the tables and truth/ into.")],
    customers: Annotated[int, typer.Option("--customers", "-n", help="Number of customers.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same world.")] = 1,
    start: Annotated[str, typer.Option(help="First day of the world (ISO date).")] = "2023-01-01",
    end: Annotated[str, typer.Option(help="Last day of the world (ISO date).")] = "2025-12-31",
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    max_calls: Annotated[
        int,
        typer.Option(
            "--max-calls",
            help="Phone campaigns call a treated customer up to this many times, a few days apart, "
            "until they respond; the outcome is on the last call, earlier calls are 'none' "
            "(1: one call).",
        ),
    ] = 1,
    no_purchases: Annotated[
        bool,
        typer.Option(
            "--no-purchases",
            help="Write no purchases, products or offers (sold in another system); "
            "customers, contacts, consents and complaints as usual.",
        ),
    ] = False,
    experiment: Annotated[
        bool,
        typer.Option(
            "--experiment",
            help="Instead of the monthly campaigns, one randomised e-mail campaign 30 days before the end "
            "to everyone with e-mail consent, a third held out; outcomes clicked / converted, "
            "with an uplift that depends on the customer.",
        ),
    ] = False,
    no_control: Annotated[
        bool,
        typer.Option("--no-control", help="No control groups: every selected customer is contacted."),
    ] = False,
    no_effect: Annotated[
        bool,
        typer.Option(
            "--no-effect",
            help="A contact does nothing: the treated respond with the control group's (organic) "
            "probability, so the true lift is zero (truth/contacts.parquet says so).",
        ),
    ] = False,
    sure_things: Annotated[
        float,
        typer.Option(
            "--sure-things",
            min=0.0,
            max=0.99,
            help="This share of customers (the most frequent buyers) responds without any contact "
            "(about 45% of the time) and a contact adds nothing: a world where ranking by response "
            "spends contacts on customers who would have bought anyway, and ranking by uplift does not.",
        ),
    ] = 0.0,
) -> None:
    """Generate a sample CRM world with known ground truth.

    The options --max-calls, --no-purchases, --experiment and --no-control make variants like the
    campaign data sets users bring (a bank-like world: --max-calls 3 --no-purchases --no-control);
    --no-effect makes a world where campaigns have no effect (a null world to test lift estimates);
    --sure-things makes one where many customers respond without any contact.
    Without them the same seed gives the same world. They are recorded in truth/design.json.
    """
    from kundenwert.datasets.sample import Variants, generate_world, write_world

    variants = Variants(
        max_calls=max_calls,
        purchases=not no_purchases,
        experiment=experiment,
        control=not no_control,
        effect=not no_effect,
        sure_things=sure_things,
    )
    variants.check()
    t0 = time.perf_counter()
    with err.status(f"simulating {customers:,} customers"):
        world = generate_world(customers, seed, start, end, variants)
    with err.status(f"writing {fmt} to {directory}"):
        rows = write_world(world, directory, fmt)
    _rows_table(f"sample world in {directory} (seed {seed})", rows)
    out.print(
        f"{sum(rows.values()):,} rows in {time.perf_counter() - t0:.1f} s; truth in {directory / 'truth'}"
    )


@app.command("simulate")
@friendly
def simulate_cmd(
    directory: Annotated[Path, typer.Argument(help="A sample world folder (`kundenwert sample`).")],
    months: Annotated[int, typer.Option(min=1, help="Months of decisions, one on each first day.")] = 4,
    contacts: Annotated[
        int, typer.Option(min=1, help="Contacts a month of the random and ranked policies.")
    ] = 200,
    budget: Annotated[
        float, typer.Option(min=0.0, help="Money a month of the greedy and optimised policies.")
    ] = 50.0,
    retrain_every: Annotated[
        int, typer.Option(min=0, help="Retrain the response model every this many months (0: never).")
    ] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the outcome draws and the random policy.")] = 0,
    start: Annotated[
        str | None, typer.Option(help="First decision date (ISO); default: months + 1 months before the end.")
    ] = None,
    policies: Annotated[
        str, typer.Option(help="Comma-separated: random, response, uplift, greedy, optimised.")
    ] = "random,response,uplift,greedy,optimised",
    log: Annotated[
        Path | None,
        typer.Option(help="Write the decision log (every candidate, for off-policy evaluation) as Parquet."),
    ] = None,
) -> None:
    """Replay months of decisions on a sample world with the service's own training, scoring and
    arbitration, feed the world's true outcomes back, and report per policy the true incremental
    responders and value (see kundenwert.simulation)."""
    from kundenwert.simulation import SimulationConfig, simulate

    config = SimulationConfig(
        months=months,
        contacts=contacts,
        budget=budget,
        retrain_every=retrain_every,
        seed=seed,
        start=start,
        policies=tuple(p.strip() for p in policies.split(",") if p.strip()),
    )
    config.check()
    t0 = time.perf_counter()
    with err.status("simulating") as status:
        sim = simulate(directory, config, progress=lambda msg: status.update(msg))
    summary = sim.summary()
    t = Table(title=f"simulation of {directory}, {sim.dates[0]:%Y-%m} to {sim.dates[-1]:%Y-%m}")
    for col in ("policy", "contacts", "held out", "cost", "incr. responders", "incr. value", "value / contact",
                "value / money"):  # fmt: skip
        t.add_column(col, justify="left" if col == "policy" else "right")
    for policy, r in summary.iterrows():
        t.add_row(
            str(policy),
            f"{int(r['contacts']):,}",
            f"{int(r['held_out']):,}",
            f"{r['cost']:,.2f}",
            f"{r['incremental_responders']:,.2f}",
            f"{r['incremental_value']:,.2f}",
            f"{r['value_per_contact']:,.3f}",
            f"{r['value_per_money']:,.3f}",
        )
    out.print(t)
    if log is not None:
        sim.log.to_parquet(log, index=False)
        out.print(f"decision log: {len(sim.log):,} rows in {log}")
    out.print(f"done in {time.perf_counter() - t0:.0f} s")


@app.command("import")
@friendly
def import_cmd(
    directory: Annotated[
        Path, typer.Argument(help="Folder with customers.csv, purchases.csv, ... (or .parquet).")
    ],
    mode: Annotated[
        str,
        typer.Option(
            help="append (refuse existing ids), upsert (update them) or replace (the folder becomes the store)."
        ),
    ] = "append",
    allow_erased: Annotated[
        bool,
        typer.Option(
            "--allow-erased",
            help="Import customers that were erased (GDPR Art. 17) as new records; only for a new, "
            "lawful record of the person (without it such an import is refused).",
        ),
    ] = False,
) -> None:
    """Validate CRM tables against the contract and import them, all or nothing."""
    from kundenwert.db.store import Store
    from kundenwert.features.importer import import_folder

    store = Store()
    t0 = time.perf_counter()
    with err.status(f"validating and importing {directory} ({mode})"):
        result = import_folder(directory, store, mode=mode, allow_erased=allow_erased)
    elapsed = time.perf_counter() - t0
    _rows_table(
        f"imported into {store.engine.url.render_as_string(hide_password=True)} ({mode})", result.rows
    )
    out.print(
        f"{result.total_rows:,} rows in {elapsed:.1f} s ({result.total_rows / max(elapsed, 1e-9):,.0f} rows/s)"
    )


@app.command("erase")
@friendly
def erase_cmd(
    ids: Annotated[list[str] | None, typer.Argument(help="Customer ids, exactly as stored.")] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="A file of customer ids, one per line (blank lines ignored)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really erase (without it: say what would be done).")
    ] = False,
) -> None:
    """Erase customers (GDPR Art. 17) from every table of the store, all or nothing.

    Their rows go from the CRM tables, attributes, scoring runs, decisions and their feedback,
    target-list members and the change log; a keyed hash of each id is kept so that a later import
    of the same id is refused. The audit log records the counts, never the ids.
    """
    from kundenwert.db.audit import cli_actor
    from kundenwert.db.erasure import erase_customers
    from kundenwert.db.store import Store
    from kundenwert.errors import ConfigurationError, InputFileError

    wanted = list(ids or [])
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(f"cannot read the id file {file}: {exc}") from None
        wanted += [line.strip() for line in text.splitlines() if line.strip()]
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        raise ConfigurationError("name the customers to erase: ids as arguments or --file FILE")
    n = len(wanted)
    if not yes:
        err.print(
            f"would erase {n:,} customer{'s' if n != 1 else ''} from every table of the store "
            "(cannot be undone); add --yes",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    store = Store()
    try:
        report = erase_customers(store, wanted, cli_actor())
    finally:
        store.dispose()
    _rows_table("rows erased per table", report.rows)
    registered = " (registered all the same: an import of them is refused)" if report.not_found else ""
    out.print(
        f"erased {report.erased:,} customer{'s' if report.erased != 1 else ''}; "
        f"{report.not_found:,} not found in the store{registered}",
        highlight=False,
        soft_wrap=True,
    )
    if report.not_found_ids:  # what the user typed: a few are shown to spot a typo
        shown = report.not_found_ids[:10]
        more = f" and {report.not_found - len(shown):,} more" if report.not_found > len(shown) else ""
        out.print(f"not found: {', '.join(shown)}{more}", highlight=False, soft_wrap=True, markup=False)


@app.command("summary")
@friendly
def summary_cmd(
    at: Annotated[
        str | None, typer.Option(help="Date the age groups and consents refer to (default: now).")
    ] = None,
) -> None:
    """Print what the store holds: rows, customers by type and age group, revenue, email consent."""
    from kundenwert.db.store import Store
    from kundenwert.features.summary import summarize

    s = summarize(Store(), at)
    _rows_table("rows per table", s.rows)
    t = Table(title=f"customers by type and age group (at {s.at:%Y-%m-%d})")
    t.add_column("type")
    for g in s.customers_by_type_and_age.columns:
        t.add_column(str(g), justify="right")
    t.add_column("total", justify="right")
    for ctype, row in s.customers_by_type_and_age.iterrows():
        t.add_row(str(ctype), *[f"{int(v):,}" for v in row], f"{int(row.sum()):,}")
    out.print(t)
    r = Table(title="revenue per year (net of returns)")
    for c in ("year", "revenue", "margin", "purchase rows"):
        r.add_column(c, justify="right")
    for year, row in s.revenue_by_year.iterrows():
        r.add_row(
            str(year), f"{row['revenue']:,.2f}", f"{row['margin']:,.2f}", f"{int(row['purchase_rows']):,}"
        )
    out.print(r if len(s.revenue_by_year) else "no purchases in the store (products sold elsewhere?)")
    out.print(
        f"customers with valid email consent (double opt-in, no objection): {s.email_consent_share:.1%} of {s.customers:,}"
    )


@app.command("snapshot")
@friendly
def snapshot_cmd(
    cutoff: Annotated[str, typer.Option(help="Cutoff (ISO date): features use rows strictly before it.")],
    out_path: Annotated[Path, typer.Option("--out", help="Parquet file to write, one row per customer.")],
    jobs: Annotated[
        int,
        typer.Option(
            help="Processes computing shards in parallel (each already uses two threads: "
            "more than 1 pays off from 4 cores on)."
        ),
    ] = 1,
    shards: Annotated[
        int, typer.Option(help="Customer shards (default: one per job; spark: about 50,000 customers each).")
    ] = 0,
    unit: Annotated[str, typer.Option(help="Unit of BTYD recency and T: D (days) or W (weeks).")] = "D",
    engine: Annotated[str, typer.Option(help=_ENGINE_HELP)] = "local",
    source: Annotated[str | None, typer.Option(help=_SOURCE_HELP)] = None,
    master: Annotated[str | None, typer.Option(help=_MASTER_HELP)] = None,
) -> None:
    """Point-in-time customer snapshot from the store (or, with --engine spark, from a Parquet folder)."""
    import pandas as pd
    from pydantic import ValidationError

    from kundenwert.db.store import Store
    from kundenwert.errors import ConfigurationError
    from kundenwert.features.snapshot import SnapshotConfig, load_frames, snapshot, without_objecting

    try:
        config = SnapshotConfig(unit=unit)
        t = pd.Timestamp(cutoff)
    except (ValidationError, ValueError) as exc:
        raise ConfigurationError(f"--unit must be D or W and --cutoff an ISO date: {exc}") from None
    if jobs < 1:
        raise ConfigurationError(f"--jobs must be at least 1, not {jobs}")
    if _engine(engine, source) == "spark":
        _snapshot_spark(source, t, config, out_path, shards, master)  # type: ignore[arg-type]
        return
    t0 = time.perf_counter()
    with err.status("reading the store"):
        frames, objecting = without_objecting(load_frames(Store()))
    if objecting:
        err.print(f"{objecting:,} customers object to profiling (GDPR Art. 21): left out of the snapshot")
    with err.status(f"computing the snapshot at {t:%Y-%m-%d}"):
        snap = snapshot(frames, t, config, shards=shards or jobs, jobs=jobs)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    snap.to_parquet(out_path)
    out.print(
        f"{len(snap):,} customers x {snap.shape[1]} features at {t:%Y-%m-%d} -> {out_path} ({time.perf_counter() - t0:.1f} s)"
    )


_ENGINE_HELP = "local (default: the store, this machine) or spark (a Parquet folder or a JDBC URL, --source)."
_SOURCE_HELP = (
    "--engine spark: folder of the contract tables as Parquet (<table>.parquet, a file or a folder "
    "of parts: the layout `kundenwert sample DIR --format parquet` writes), or a JDBC URL of a "
    "database holding them (jdbc:postgresql://host:5432/crm?user=...; the password from "
    "KUNDENWERT_JDBC_PASSWORD)."
)
_MASTER_HELP = "--engine spark: Spark master (default: KUNDENWERT_SPARK_MASTER, else local[2])."


def _engine(engine: str, source: str | None) -> str:
    """The checked engine name: spark needs --source (a folder or a JDBC URL), local reads the store."""
    from kundenwert.errors import ConfigurationError

    if engine not in ("local", "spark"):
        raise ConfigurationError(f"--engine must be local or spark, not {engine!r}")
    if engine == "spark" and source is None:
        raise ConfigurationError(
            "--engine spark reads a folder of Parquet tables or a JDBC URL: give it with --source"
        )
    if engine == "local" and source is not None:
        raise ConfigurationError("--source is for --engine spark; the local engine reads the store")
    if (
        source is not None
        and "://" not in source
        and not source.startswith("jdbc:")
        and not Path(source).is_dir()
    ):
        from kundenwert.errors import InputFileError

        raise InputFileError(f"--source {source!r} does not exist or is not a folder")
    return engine


def _snapshot_spark(
    source: str, t: Any, config: Any, out_path: Path, shards: int, master: str | None
) -> None:
    """``kundenwert snapshot --engine spark``: the snapshot as a folder of Parquet parts."""
    import pandas as pd

    from kundenwert.features.spark import jdbc_conf, snapshot_spark, spark_session

    t0 = time.perf_counter()
    with err.status("starting Spark"):
        spark = spark_session(master, conf=jdbc_conf(source))
    try:
        with err.status(f"computing the snapshot at {t:%Y-%m-%d} on Spark ({spark.sparkContext.master})"):
            frame, dtypes, objecting = snapshot_spark(
                spark, source, t, config, shards=shards or None, drop_objecting=pd.Timestamp.now(tz="UTC")
            )
            frame.write.mode("overwrite").parquet(str(out_path))
        if objecting:
            err.print(f"{objecting:,} customers object to profiling (GDPR Art. 21): left out of the snapshot")
        n = spark.read.parquet(str(out_path)).count()
    finally:
        spark.stop()
    out.print(
        f"{n:,} customers x {len(dtypes) - 1} features at {t:%Y-%m-%d} -> {out_path}/ (Parquet parts, "
        f"customer_id a column; {time.perf_counter() - t0:.1f} s)"
    )


@app.command("features")
@friendly
def features_cmd() -> None:
    """List the feature catalogue: every snapshot column with its family, type and meaning."""
    import pandas as pd

    from kundenwert.db.store import Store
    from kundenwert.features.catalogue import catalogue
    from kundenwert.features.snapshot import load_frames, snapshot_shard, spec_for

    frames = load_frames(Store())
    spec = spec_for(frames)
    few = {**frames, "customers": frames["customers"].head(50)}  # the columns are fixed by the spec
    cat = catalogue(snapshot_shard(few, pd.Timestamp.now(tz="UTC"), spec))
    t = Table(title=f"feature catalogue ({len(cat)} features)")
    for c in ("name", "family", "type", "meaning"):
        t.add_column(c)
    for row in cat.itertuples(index=False):
        t.add_row(row.name, row.family, row.type, row.meaning)
    out.print(t)


@app.command("train")
@friendly
def train_cmd(
    config: Annotated[
        Path | None, typer.Option("--config", help="Experiment TOML (default: the packaged experiment).")
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(help="Comma-separated model names (default: the enabled ones)."),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write every metric and gate as JSON here.")] = None,
) -> None:
    """Train, backtest, track in MLflow, register challengers and promote champions that pass."""
    from kundenwert.experiments.registry import tracking_uri
    from kundenwert.training.config import load_config
    from kundenwert.training.run import run_training

    cfg = load_config(config)  # validated before any work
    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    cfg.enabled(chosen)
    t0 = time.perf_counter()
    with err.status("training") as status:

        def progress(message: str) -> None:
            status.update(f"{message} ({time.perf_counter() - t0:.0f} s)")
            err.print(f"[dim]{time.perf_counter() - t0:6.1f} s[/] {message}", highlight=False)

        results, decisions = run_training(cfg, chosen, report_path=report, progress=progress)
    t = Table(title=f"training run ({time.perf_counter() - t0:.0f} s)")
    for c in ("model", "rows", "metrics (test rows)", "gates", "version", "champion"):
        t.add_column(c)
    for name, r in results.items():
        shown = ", ".join(
            f"{k} {'not measurable' if v is None else f'{v:.3f}'}"
            for k, v in r.metrics.items()
            if k in _SHOWN
        )
        d = decisions[name]
        inapplicable = [g for g, v in r.gates.items() if v.get("applicable") is False]
        gates = "passed" if r.passed else "failed"
        if inapplicable:
            gates += f" ({', '.join(inapplicable)}: not applicable)"
        rows = f"{r.data['rows']:,}" + (" (by customer)" if r.split.get("method") == "customer" else "")
        t.add_row(
            name, rows, shown, gates, str(d["version"]), "yes" if d["promoted"] else f"no: {d['reason']}"
        )
    for name, reason in getattr(results, "skipped", {}).items():
        t.add_row(name, "-", f"skipped: {reason}", "-", "-", "-")
    out.print(t)
    for name, r in results.items():
        if r.split.get("reason"):
            out.print(f"{name}: split by customer: {r.split['reason']}", soft_wrap=True, highlight=False)
        for warning in r.warnings:
            out.print(f"[yellow]warning[/] {name}: {warning}", soft_wrap=True, highlight=False)
    uri = tracking_uri()
    out.print(f"runs and models: {uri} (experiment {cfg.name!r})", soft_wrap=True, highlight=False)
    out.print(f"browse them: mlflow ui --backend-store-uri {uri}", soft_wrap=True, highlight=False)
    if report:
        out.print(f"metrics report: {report}", soft_wrap=True, highlight=False)


_SHOWN = (
    "roc_auc",
    "pr_auc",
    "ece",
    "lift_top_decile",
    "spearman",
    "mae",
    "top20_captured",
    "roc_auc_mean",
    "qini_normalized",
)


@app.command("score")
@friendly
def score_cmd(
    at: Annotated[
        str | None, typer.Option(help="Score as of this date (default: the day after the latest data).")
    ] = None,
    actions: Annotated[
        Path | None,
        typer.Option(help="Action catalog TOML (default: KUNDENWERT_ACTIONS, else the packaged catalog)."),
    ] = None,
    engine: Annotated[str, typer.Option(help=_ENGINE_HELP)] = "local",
    source: Annotated[str | None, typer.Option(help=_SOURCE_HELP)] = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="--engine spark: folder to write scores/ and propensity/ into (Parquet)."),
    ] = None,
    store: Annotated[
        bool,
        typer.Option(
            "--store",
            help="--engine spark: also store the scoring run in the store, as the local engine does.",
        ),
    ] = False,
    master: Annotated[str | None, typer.Option(help=_MASTER_HELP)] = None,
    shards: Annotated[
        int, typer.Option(help="--engine spark: customer shards (default: about 50,000 each).")
    ] = 0,
) -> None:
    """Score every customer with the champion models and store the scores for serving."""
    from kundenwert.db.store import Store
    from kundenwert.errors import ConfigurationError
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.scoring import run_scoring

    catalog = load_catalog(actions)
    if _engine(engine, source) == "spark":
        if out_path is None:
            raise ConfigurationError(
                "--engine spark writes its scores as Parquet: give a folder with --out DIR"
            )
        _score_spark(source, out_path, catalog, at, store, master, shards)  # type: ignore[arg-type]
        return
    if out_path is not None or store:
        raise ConfigurationError("--out and --store are for --engine spark; the local engine stores its run")
    t0 = time.perf_counter()
    with err.status("scoring") as status:

        def progress(message: str) -> None:
            status.update(message)
            err.print(f"[dim]{time.perf_counter() - t0:6.1f} s[/] {message}", highlight=False)

        from kundenwert.threads import limited

        with limited():  # every prediction of the run within the thread budget (KUNDENWERT_THREADS)
            done = run_scoring(Store(), catalog, at, progress)
    versions = ", ".join(f"{k} v{v}" for k, v in done["models"].items())
    out.print(
        f"scored {done['customers']:,} customers x {done['pairs']} action-channel pairs as of "
        f"{done['at']:%Y-%m-%d} in {time.perf_counter() - t0:.0f} s (run {done['run_id'][:12]}; {versions}); "
        f"{done['not_profiled']:,} objecting customers not profiled",
        soft_wrap=True,
        highlight=False,
    )
    if done["missing_models"]:  # trained only on what the data has: say what this run lacks
        out.print(
            f"no champion for {', '.join(done['missing_models'])}: their scores are not stored; "
            f"{len(done['unavailable_actions'])} catalog action(s) need them and are not suggested "
            f"({', '.join(done['unavailable_actions'])})",
            soft_wrap=True,
            highlight=False,
        )


def _score_spark(
    source: str, out_path: Path, catalog: Any, at: str | None, store: bool, master: str | None, shards: int
) -> None:
    """``kundenwert score --engine spark``: scores and propensities as Parquet (and the store's run)."""
    from kundenwert.db.store import Store
    from kundenwert.features.spark import jdbc_conf, spark_session
    from kundenwert.serving.spark import score_spark, store_run

    t0 = time.perf_counter()
    with err.status("starting Spark") as status:
        spark = spark_session(master, conf=jdbc_conf(source))

        def progress(message: str) -> None:
            status.update(message)
            err.print(f"[dim]{time.perf_counter() - t0:6.1f} s[/] {message}", highlight=False)

        try:
            done = score_spark(spark, source, out_path, catalog, at, shards=shards or None, progress=progress)
        finally:
            spark.stop()
        run = ""
        if store:
            progress("storing the scoring run")
            run = f"; run {store_run(Store(), out_path, done)[:12]} stored"
    versions = ", ".join(f"{k} v{v}" for k, v in done["models"].items())
    out.print(
        f"scored {done['customers']:,} customers x {done['pairs']} action-channel pairs as of "
        f"{done['at']:%Y-%m-%d} on Spark in {time.perf_counter() - t0:.0f} s ({versions}) -> "
        f"{out_path}/scores, {out_path}/propensity{run}; {done['not_profiled']:,} objecting customers not profiled",
        soft_wrap=True,
        highlight=False,
    )
    if done["missing_models"]:
        out.print(
            f"no champion for {', '.join(done['missing_models'])}: their scores are not written",
            soft_wrap=True,
            highlight=False,
        )


@app.command("results")
@friendly
def results_cmd(
    campaign: Annotated[
        str | None,
        typer.Option("--campaign", help="One campaign (a campaign_id of the contacts, or a list id)."),
    ] = None,
    list_id: Annotated[str | None, typer.Option("--list", help="One target list of this service.")] = None,
    by: Annotated[
        str,
        typer.Option(
            help="Cells by any of campaign, action, channel, month (comma-separated; '' for one cell)."
        ),
    ] = "action,channel",
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    since: Annotated[str | None, typer.Option(help="Only contacts from this date on.")] = None,
    until: Annotated[str | None, typer.Option(help="Only contacts before this date.")] = None,
    response_window: Annotated[
        int, typer.Option(help="Days after a contact in which a response counts.")
    ] = 14,
    attribution_days: Annotated[int, typer.Option(help="Days after a contact whose purchases count.")] = 30,
    method: Annotated[str, typer.Option(help="Revenue and margin intervals: welch or bootstrap.")] = "welch",
    control_share: Annotated[
        float | None, typer.Option(help="The control share that was drawn (checks the split).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    plots: Annotated[
        Path | None, typer.Option(help="Write the lift and cumulative revenue plots (PNG) into this folder.")
    ] = None,
    mlflow_run: Annotated[
        bool,
        typer.Option(
            "--mlflow", help="Log the report and its plots as an MLflow run (kundenwert-campaign-results)."
        ),
    ] = False,
    actions: Annotated[
        Path | None,
        typer.Option(help="Action catalog TOML (default: KUNDENWERT_ACTIONS, else the packaged catalog)."),
    ] = None,
) -> None:
    """Did it work? Lift of every campaign, list, action and channel against its control group,
    with 95% intervals, Benjamini-Hochberg significance and the checks a statistician makes."""
    import json

    from kundenwert.db.store import Store
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.results import measure, parse_query, report_rows

    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter(f"--format must be table, csv or json, not {fmt!r}")
    query = parse_query(
        campaign_id=campaign,
        list_id=list_id,
        by=by,
        action_id=action,
        channel=channel,
        since=since,
        until=until,
        response_window=response_window,
        attribution_days=attribution_days,
        method=method,
        control_share=control_share,
    )
    catalog = load_catalog(actions)
    store = Store()
    with err.status("measuring"):
        report, exposures = measure(store, catalog, query)
    if plots is not None or mlflow_run:
        from kundenwert.serving.results import result_plots

        drawn = result_plots(store, report, exposures, query)
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            for name, png in drawn.items():
                (plots / f"{name}.png").write_bytes(png)
                err.print(f"wrote {plots / name}.png", highlight=False)
        if mlflow_run:
            from kundenwert.experiments.registry import RESULTS_EXPERIMENT, log_results

            run_id = log_results(report, drawn, campaign or list_id or "all campaigns")
            err.print(f"logged as MLflow run {run_id} in {RESULTS_EXPERIMENT}", highlight=False)
    if fmt == "json":
        out.print_json(json.dumps(report))
        return
    rows = report_rows(report)
    if fmt == "csv":
        import csv
        import sys

        names = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(sys.stdout, fieldnames=names, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return
    _results_table(report, rows)


def _results_table(report: dict, rows: list[dict]) -> None:
    def pct(v) -> str:
        return "" if v is None else f"{v:.2%}"

    def span(r: dict, m: str, f=pct) -> str:
        if r.get(f"{m}_lift") is None:
            return ""
        star = " *" if r.get(f"{m}_significant") else ""
        return f"{f(r[f'{m}_lift'])} [{f(r[f'{m}_lift_low'])}, {f(r[f'{m}_lift_high'])}]{star}"

    money = lambda v: "" if v is None else f"{v:,.2f}"  # noqa: E731
    scope = ", ".join(f"{k} {v}" for k, v in report["scope"].items()) or "all campaigns"
    t = Table(
        title=f"campaign results: {scope} (data to {report['as_of'][:10]}; response window "
        f"{report['response_window_days']} d, purchases {report['attribution_days']} d)",
        caption="lift: treated minus control, 95% interval; * significant after Benjamini-Hochberg",
    )
    keys = report["by"]
    for k in keys:
        t.add_column(k)
    for c in (
        "treated",
        "control",
        "responded",
        "lift",
        "bought lift",
        "revenue / customer",
        "incr. revenue",
        "return on cost",
        "warnings",
    ):
        t.add_column(c, justify="left" if c == "warnings" else "right")
    for r in rows:
        head = [str(r.get(k, "")) for k in keys]
        if r.get("suppressed"):
            t.add_row(*head, "<20", "", "suppressed", *[""] * 6)
            continue
        roc = r.get("incremental_return_on_cost")
        t.add_row(
            *head,
            f"{r['treated']:,}",
            f"{r['control']:,}",
            f"{pct(r['responded_treated_rate'])} vs {pct(r['responded_control_rate'])}",
            span(r, "responded"),
            span(r, "bought"),
            span(r, "revenue", money),
            money(r.get("revenue_incremental")),
            "" if roc is None else f"{roc:.1%}",
            r["warnings"],
        )
    out.print(t)
    if report.get("not_sent"):
        out.print(f"not sent yet (no contact recorded): {', '.join(report['not_sent'])}", highlight=False)
    if report.get("left_out_objecting"):
        out.print(
            f"{report['left_out_objecting']:,} exposures of customers who object now are left out",
            highlight=False,
        )


@app.command("evaluate-policy")
@friendly
def evaluate_policy_cmd(
    catalog_path: Annotated[
        Path | None,
        typer.Option("--catalog", help="The candidate catalog TOML (default: the catalog in service)."),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="Model versions whose scoring run the candidate policy ranks with, e.g. response=4 "
            "(default: the current run)."
        ),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Only decisions from this date on.")] = None,
    until: Annotated[str | None, typer.Option(help="Only decisions before this date.")] = None,
    reward: Annotated[str, typer.Option(help="response (0/1) or value (the response's value).")] = "response",
    outcome: Annotated[
        str, typer.Option(help="What counts as a response: converted or clicked.")
    ] = "converted",
    n_boot: Annotated[int, typer.Option(min=100, max=100_000, help="Bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """What would another catalog or other models have earned? Off-policy estimates (IPS,
    self-normalised IPS, doubly robust) of the candidate policy's reward per contact on the
    logged decisions and their reported outcomes, with 95% bootstrap intervals and effective
    sample sizes, beside the logged policy's observed value."""
    import json

    from kundenwert.db.store import Store
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.policy_eval import evaluate_store, parse_models

    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"--format must be table or json, not {fmt!r}")
    versions = parse_models(models)
    catalog = load_catalog(catalog_path)
    with err.status("evaluating"):
        report = evaluate_store(
            Store(),
            catalog,
            models=versions,
            since=since,
            until=until,
            reward=reward,
            outcome=outcome,
            n_boot=n_boot,
            seed=seed,
        )
    if fmt == "json":
        out.print_json(json.dumps(report.to_dict()))
        return
    names = {
        "logged": "logged policy (observed)",
        "ips": "IPS",
        "snips": "self-normalised IPS",
        "dr": "doubly robust",
        "dm": "direct method (reward model only)",
    }
    unit = "responses" if reward == "response" else "value"
    t = Table(
        title=f"candidate policy: {catalog_path or 'the catalog in service'}"
        + (f", models {models}" if models else "")
        + f"; {unit} per contact ({outcome}), {report.slots:,} logged contacts",
        caption="95% bootstrap intervals; vs logged: the paired difference to the logged policy",
    )
    for c in ("estimator", "estimate", "95% interval", "ESS", "vs logged", "warnings"):
        t.add_column(c, justify="left" if c in ("estimator", "warnings") else "right")
    fmt_v = (lambda v: f"{v:.4f}") if reward == "response" else (lambda v: f"{v:,.2f}")
    for r in report.rows():
        vs = (
            ""
            if r["vs_logged"] is None
            else (f"{fmt_v(r['vs_logged'])} [{fmt_v(r['vs_logged_low'])}, {fmt_v(r['vs_logged_high'])}]")
        )
        t.add_row(
            names[r["estimator"]],
            fmt_v(r["estimate"]),
            f"[{fmt_v(r['low'])}, {fmt_v(r['high'])}]",
            f"{r['ess']:,.0f}",
            vs,
            "; ".join(r["warnings"]),
        )
    out.print(t)
    for why, n in report.left_out.items():
        out.print(f"left out: {n:,} {why}", highlight=False)
    for w in report.evaluation.warnings:
        out.print(f"warning: {w}", highlight=False)


@app.command("plan")
@friendly
def plan_cmd(
    rate: Annotated[
        float, typer.Option(help="Response rate without contact (the control group's), e.g. 0.03.")
    ],
    lift: Annotated[
        float | None, typer.Option(help="Absolute lift to detect, e.g. 0.01 (one point).")
    ] = None,
    size: Annotated[int | None, typer.Option(help="Customers in the list (with control).")] = None,
    control_share: Annotated[float, typer.Option(help="Share held out as control.")] = 0.1,
    power: Annotated[float, typer.Option(help="Power of the test.")] = 0.8,
) -> None:
    """Plan a campaign: the smallest lift a list can detect, or the list size and control share
    needed to detect a given lift (two-sided test at 5%, normal approximation)."""
    from kundenwert.serving.results import plan

    p = plan(rate, lift=lift, size=size, control_share=control_share, power=power)
    for k, v in p.items():
        shown = (
            f"{v:.4%}"
            if isinstance(v, float)
            and k in ("base_rate", "lift", "minimum_detectable_lift", "control_share_needed", "control_share")
            else f"{v:,}"
            if isinstance(v, int) and not isinstance(v, bool)
            else str(v)
        )
        out.print(f"{k.replace('_', ' ')}: {shown}", highlight=False)


@app.command("campaign-plan")
@friendly
def campaign_plan_cmd(
    objective: Annotated[
        str, typer.Option(help="The objective, as for a target list (e.g. churn_prevention).")
    ],
    channels: Annotated[
        str, typer.Option(help="The channels the plan may use, comma-separated: email,phone.")
    ],
    budget: Annotated[float | None, typer.Option(help="Money for the whole plan (channel costs).")] = None,
    capacity: Annotated[
        list[str] | None,
        typer.Option(
            help="Most contacts of a channel, CHANNEL=N (repeat: --capacity phone=500 --capacity sms=2000)."
        ),
    ] = None,
    category: Annotated[str | None, typer.Option(help="cross_sell: the category.")] = None,
    action_id: Annotated[
        str | None, typer.Option("--action", help="objective action: the catalog action.")
    ] = None,
    name: Annotated[str, typer.Option(help="The plan's name (its lists are named after it).")] = "",
    control_share: Annotated[
        float, typer.Option(help="--save: share of each list held out as control.")
    ] = 0.1,
    save: Annotated[
        bool, typer.Option("--save", help="Store one target list per channel, each with its control group.")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    actions: Annotated[
        Path | None,
        typer.Option(help="Action catalog TOML (default: KUNDENWERT_ACTIONS, else the packaged catalog)."),
    ] = None,
) -> None:
    """Plan a campaign across channels: the best contacts for an objective under a money budget
    and a capacity per channel, at most one action per customer (an optimisation, not customer by
    customer), with the shadow prices of the budget and of each capacity and the greedy reference
    beside it. The same plan as POST /v1/campaign-plans, from the current scoring run."""
    import json

    from pydantic import ValidationError

    from kundenwert.db.store import Store
    from kundenwert.serving.campaign_plans import CampaignPlanRequest, plan_campaign
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.state import ServingState
    from kundenwert.serving.target_lists import save_target_lists
    from kundenwert.settings import get_settings

    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"--format must be table or json, not {fmt!r}")
    caps: dict[str, int] = {}
    for item in capacity or []:
        channel, sep, number = item.partition("=")
        if not sep or not number.strip().lstrip("-").isdigit():
            raise typer.BadParameter(f"--capacity takes CHANNEL=N (a whole number), not {item!r}")
        caps[channel.strip()] = int(number)
    names = [c.strip() for c in channels.split(",") if c.strip()]
    other = [c for c in caps if c not in names]
    if other:
        raise typer.BadParameter(
            f"--capacity names {', '.join(other)}, which --channels does not ({', '.join(names)})"
        )
    try:
        request = CampaignPlanRequest(
            name=name,
            objective=objective,
            category=category,
            action_id=action_id,
            channels={c: {"capacity": caps.get(c)} for c in names},
            budget=budget,
            control_share=control_share,
            save=save,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'plan'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise typer.BadParameter(problems) from None
    store = Store()
    state = ServingState(store, load_catalog(actions))
    try:
        plan, lists = plan_campaign(
            request,
            state.catalog,
            state.decide,
            state.held_scores(),
            state.current.unavailable,
            max_size=get_settings().max_target_list,
        )
        if save:
            plan["created_at"] = save_target_lists(store.engine, lists, detail={"plan_id": plan["plan_id"]})
            plan["saved"] = True
    finally:
        state.close()
    if fmt == "json":
        out.print_json(json.dumps(plan))
        return
    _plan_table(plan)


def _plan_table(plan: dict) -> None:
    def num(x: float | None, digits: int = 2) -> str:
        return "-" if x is None else f"{x:,.{digits}f}"

    t = Table(title=f"campaign plan {plan['plan_id']} ({plan['objective']})")
    for c in (
        "channel",
        "contacts",
        "cost",
        "incr. responders",
        "incr. value",
        "objective",
        "capacity",
        "shadow price",
        "list",
    ):
        t.add_column(c, justify="left" if c in ("channel", "list") else "right")
    for channel, p in plan["channels"].items():
        t.add_row(
            channel,
            f"{p['contacts']:,}",
            num(p["cost"]),
            num(p["expected_incremental_responders"], 1),
            num(p["expected_incremental_value"]),
            num(p["objective_value"]),
            "-"
            if p["capacity"] is None
            else f"{p['capacity']:,}" + (" (max)" if p["capped_by_max_size"] else ""),
            num(p["capacity_shadow_price"], 4),
            p.get("list_id") or "-",
        )
    t.add_row(
        "total",
        f"{plan['contacts']:,}",
        num(plan["cost"]),
        num(plan["expected_incremental_responders"], 1),
        num(plan["expected_incremental_value"]),
        num(plan["objective_value"]),
        "",
        "",
        "",
    )
    out.print(t)
    b, g = plan["budget"], plan["greedy"]
    if b is not None:
        out.print(
            f"budget {num(b['limit'])}: {num(b['used'])} used; one more unit is worth "
            f"{num(b['shadow_price'], 4)} (LP re-solved: {num(b['gain'], 4)})",
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"greedy reference: {g['contacts']:,} contacts, objective {num(g['objective_value'])} "
        f"(the plan {num(plan['objective_value'] - g['objective_value'])} more); {plan['method']}, "
        f"{'optimal' if plan['optimal'] else 'gap ' + num(plan['gap'])}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("sales")
@friendly
def sales_cmd(
    days: Annotated[
        int | None, typer.Option(help="Length of the period in days (default 90; with --since or --until).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Start of the period (ISO date or instant, UTC).")] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="End of the period, exclusive (default: the end of the day of the latest purchase)."
        ),
    ] = None,
    by: Annotated[str, typer.Option(help="A row per category or per product.")] = "category",
    dims: Annotated[
        str,
        typer.Option(help="Group dimensions besides age_group, comma-separated: customer_type,region."),
    ] = "",
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """Sales by age group: net revenue, margin, units and buyers per category (or product) x age
    group (and customer type, region) over a period, each group's share, the change against the
    previous period of the same length, and the predicted affinity of the current scoring run.

    Customers who object to profiling are not counted; groups of fewer than 20 buyers are left
    out and counted."""
    import json

    from kundenwert.db.store import Store
    from kundenwert.errors import ConfigurationError
    from kundenwert.serving.sales import current_scores, sales_report

    if fmt not in ("table", "csv", "json"):
        raise ConfigurationError(f"--format must be table, csv or json, not {fmt!r}")
    store = Store()
    with err.status("reading the store"):
        scores, run_id = current_scores(store)
        report = sales_report(
            store,
            days=days,
            since=since,
            until=until,
            by=by,
            dims=dims.split(","),
            scores=scores,
            score_run=run_id,
            option="--",
        )
    if fmt == "json":
        out.print_json(json.dumps(report.as_dict()))
        return
    if fmt == "csv":
        typer.echo(report.rows.to_csv(index=False), nl=False)
        return
    _sales_table(report)


def _sales_table(report: Any) -> None:
    """The report as a rich table, with what was left out below it."""
    import math

    def num(v: float, spec: str = ",.2f") -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    p, prev = report.period, report.period.previous
    last = p.last_day
    t = Table(
        title=f"sales by {report.by} x {' x '.join(report.dims)}, {p.start:%Y-%m-%d} to {last:%Y-%m-%d} "
        f"(previous: {prev.start:%Y-%m-%d} to {prev.last_day:%Y-%m-%d}; age at {last:%Y-%m-%d})"
    )
    item = "product_id" if report.by == "product" else "category"
    labels = [item, *(["category"] if report.by == "product" else []), *report.dims]
    for c in labels:
        t.add_column(c.replace("_", " "))
    figures = [
        "revenue",
        "margin",
        "units",
        "buyers",
        "share",
        "buyers share",
        "previous",
        "change",
        "change %",
    ]
    affinity = report.by == "category"
    figures += ["pred. affinity", "lift"] if affinity else []
    for c in figures:
        t.add_column(c, justify="right")
    for r in report.rows.itertuples(index=False):
        row = r._asdict()
        cells = [str(row[c]) for c in labels]
        cells += [
            num(row["revenue"]),
            num(row["margin"]),
            num(row["units"], ",.0f"),
            f"{row['buyers']:,}",
            num(row["revenue_share"], ".1%"),
            num(row["buyers_share"], ".1%"),
            num(row["previous_revenue"]),
            num(row["revenue_change"], "+,.2f"),
            num(row["revenue_change_rel"], "+.1%"),
        ]
        if affinity:
            cells += [num(row["predicted_affinity"], ".3f"), num(row["predicted_lift"], ".2f")]
        t.add_row(*cells)
    out.print(t if len(report.rows) else f"no group with {report.min_group} or more buyers in the period")
    notes = [
        f"{report.suppressed_groups:,} group(s) of fewer than {report.min_group} buyers left out",
        f"{report.suppressed_previous:,} previous-period figure(s) of fewer than {report.min_group} buyers not shown",
        f"{report.objecting_customers:,} objecting customer(s) not counted",
    ]
    if not report.margin_given:
        notes.append(report.extra.get("margin_note", "no margin"))
    if affinity:
        notes.append(
            f"predicted affinity: scoring run {report.score_run[:12]}"
            if report.score_run
            else (report.affinity_note or "no predicted affinity")
        )
    out.print("; ".join(notes), highlight=False, soft_wrap=True)


@keys_app.command("create")
@friendly
def keys_create_cmd(
    role: Annotated[str, typer.Option(help="sales, marketing, campaign, data_science or admin")],
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown in listings).")] = "",
    expires: Annotated[
        str | None,
        typer.Option(
            help="When it stops working: a duration (90d, 12h) or an ISO date/instant (2027-01-01)."
        ),
    ] = None,
) -> None:
    """Create an API key; it is printed once and stored only as a hash (audited)."""
    from kundenwert.db.store import Store
    from kundenwert.serving.keys import create_key, parse_expiry

    at = parse_expiry(expires) if expires else None
    key = create_key(Store().engine, role, name, expires=at)
    out.print(key, highlight=False, soft_wrap=True)
    until = f", valid until {_instant(at.isoformat())}" if at else ""
    err.print(f"[dim]a key for role {role}{until}; it is not shown again[/]", highlight=False)


def _instant(iso: str | None, seconds: bool = False) -> str:
    """An ISO instant as the tables show it: UTC, to the minute (or second)."""
    if not iso:
        return ""
    return iso.replace("T", " ")[: 19 if seconds else 16] + " UTC"


@keys_app.command("list")
@friendly
def keys_list_cmd() -> None:
    """The keys: id, role, name, created, expires, revoked (never a secret or its hash)."""
    from kundenwert.db.store import Store
    from kundenwert.serving.keys import list_keys

    rows = list_keys(Store().engine)
    t = Table(title=f"API keys ({len(rows)})")
    t.add_column("id", no_wrap=True)
    for col in ("role", "name", "created", "expires", "revoked", "status"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["key_id"],
            r["role"],
            r["name"],
            _instant(r["created_at"]),
            _instant(r["expires_at"]) or "never",
            _instant(r["revoked_at"]) or ("yes" if r["revoked"] else ""),
            r["status"],
        )
    out.print(t)


@keys_app.command("revoke")
@friendly
def keys_revoke_cmd(
    key_id: Annotated[str, typer.Argument(help="The key's id (`kundenwert keys list`).")],
) -> None:
    """Revoke a key at once; a running service refuses it within about a second (audited)."""
    from kundenwert.db.store import Store
    from kundenwert.serving.keys import revoke_key

    if revoke_key(Store().engine, key_id):
        out.print(f"revoked key {key_id}", highlight=False)
    else:
        out.print(f"key {key_id} was revoked already", highlight=False)


@keys_app.command("rotate")
@friendly
def keys_rotate_cmd(
    key_id: Annotated[str, typer.Argument(help="The key's id (`kundenwert keys list`).")],
    grace: Annotated[
        str | None,
        typer.Option(help="Let the old key work this much longer (30m, 1h, 2d) instead of revoking it now."),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            help="The new key's expiry (90d, 2027-01-01); default: the old key's lifetime, from now."
        ),
    ] = None,
) -> None:
    """A new key with the same role and name, printed once; the old one revoked (audited)."""
    from kundenwert.db.store import Store
    from kundenwert.serving.keys import rotate_key

    key, until = rotate_key(Store().engine, key_id, grace=grace, expires=expires)
    out.print(key, highlight=False, soft_wrap=True)
    old = (
        f"the old key {key_id} works until {_instant(until)}" if until else f"the old key {key_id} is revoked"
    )
    err.print(f"[dim]{old}; the new key is not shown again[/]", highlight=False)


@app.command("audit")
@friendly
def audit_cmd(
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. key.revoke, customer.erase.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this ISO date or instant on (UTC unless given).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows, newest first (1 to 1000).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
) -> None:
    """The audit log: who did what to which object, how many rows, when (newest first)."""
    import json

    from kundenwert.db.audit import read_audit
    from kundenwert.db.store import Store

    rows = read_audit(Store().engine, action=action, since=since, limit=limit)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table(title=f"audit log ({len(rows)} rows, newest first)")
    for col in ("at", "who", "action", "object", "rows"):
        t.add_column(col)
    t.add_column("detail", overflow="fold")
    for r in rows:
        what = f"{r['object_type']} {r['object_id']}" if r["object_id"] else r["object_type"]
        detail = ", ".join(f"{k}={v}" for k, v in (r["detail"] or {}).items() if v not in (None, ""))
        t.add_row(
            _instant(r["at"], seconds=True),
            r["actor"],
            r["action"],
            what,
            "" if r["rows"] is None else str(r["rows"]),
            detail,
        )
    out.print(t)


@db_app.command("upgrade")
@friendly
def db_upgrade_cmd() -> None:
    """Upgrade the configured store (KUNDENWERT_DATABASE_URL) to the newest schema, in place."""
    from kundenwert.db.backends import make_engine
    from kundenwert.db.errors import map_exceptions
    from kundenwert.db.migrate import upgrade
    from kundenwert.settings import get_settings

    engine = make_engine(get_settings().resolved_database_url())
    with map_exceptions("upgrading the store"):
        before, after = upgrade(engine)
    engine.dispose()
    was = f"was {before}" if before else "was none: written before migrations"
    out.print(f"store at revision {after}" + (" (unchanged)" if before == after else f" ({was})"))


@db_app.command("current")
@friendly
def db_current_cmd() -> None:
    """Print the configured store's schema revision."""
    from kundenwert.db.backends import make_engine
    from kundenwert.db.errors import map_exceptions
    from kundenwert.db.migrate import describe
    from kundenwert.settings import get_settings

    engine = make_engine(get_settings().resolved_database_url())
    with map_exceptions("reading the store's revision"):
        out.print(describe(engine), highlight=False)
    engine.dispose()


@app.command("serve")
@friendly
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    actions: Annotated[
        Path | None,
        typer.Option(help="Action catalog TOML (default: KUNDENWERT_ACTIONS, else the packaged catalog)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes: each loads its own models and state and keeps its own rate-limit "
            "buckets; all share one store.",
        ),
    ] = 1,
    demo: Annotated[
        bool, typer.Option("--demo", help="Create and print a key per role and example requests first.")
    ] = False,
) -> None:
    """Run the API (FastAPI on uvicorn; OMP_NUM_THREADS=1 for scoring in requests)."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from kundenwert.serving.app import create_app
    from kundenwert.serving.ratelimit import buckets_from_settings

    buckets_from_settings()  # a bad setting is refused here, before any worker starts
    if demo:
        _print_demo(host, port)

    # no access log: request paths carry customer ids, which do not belong in logs
    options: dict = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "loop": "asyncio",  # uvloop serves an overloaded loop unfairly: p99 122 ms vs 25 ms (bench/serve.py)
        # httptools with TCP_NODELAY: with several workers asyncio leaves Nagle on (40 ms per answer)
        "http": "kundenwert.serving.server:HttpToolsNoDelay",
    }
    if workers == 1:
        uvicorn.run(create_app(catalog_path=actions), workers=1, **options)
        return
    # Several processes: uvicorn starts each from an import string and builds its app there; the
    # catalog reaches them through the environment they inherit.
    if actions is not None:
        os.environ["KUNDENWERT_ACTIONS"] = str(actions.resolve())
    uvicorn.run("kundenwert.serving.app:create_app", factory=True, workers=workers, **options)


def _print_demo(host: str, port: int) -> None:
    """A key per role (name "demo") and requests to try, with a real customer of the store."""
    from kundenwert.db.store import Store
    from kundenwert.serving.keys import ROLES, create_key
    from kundenwert.serving.scores_store import read_scores

    store = Store()
    scores, _, _ = read_scores(store.engine)
    active = scores.index[scores["status"] == "active"]
    cid = str(active[0] if len(active) else scores.index[0])
    keys = {role: create_key(store.engine, role, "demo") for role in ROLES}
    t = Table(title="demo API keys (shown once; stored as hashes)")
    t.add_column("role")
    t.add_column("key")
    for role, key in keys.items():
        t.add_row(role, key)
    out.print(t)
    base = f"http://{host}:{port}"
    examples = [
        f"curl -H 'X-API-Key: {keys['sales']}' '{base}/v1/customers/{cid}'",
        f"curl -H 'X-API-Key: {keys['sales']}' '{base}/v1/customers/{cid}/next-best-actions?explain=true'",
        f"curl -H 'X-API-Key: {keys['campaign']}' -H 'Content-Type: application/json' "
        f'-d \'{{"customer_ids": ["{cid}"], "channels": ["email"]}}\' {base}/v1/score',
        f"curl -H 'X-API-Key: {keys['marketing']}' -H 'Content-Type: application/json' "
        f'-d \'{{"objective": "churn_prevention", "channel": "email", "size": 500}}\' '
        f"{base}/v1/target-lists",
        f"curl -H 'X-API-Key: {keys['marketing']}' {base}/v1/analytics/kpis",
        f"open {base}/docs   # the OpenAPI documentation",
    ]
    out.print(
        f"\n[bold]web app:[/] {base}/app   sign in with a key above (sales: customers; marketing: "
        "lists, campaigns, analytics; data_science: models; admin: all)",
        highlight=False,
        soft_wrap=True,
    )
    out.print("\n[bold]try:[/]", highlight=False)
    for line in examples:
        out.print(line, highlight=False, soft_wrap=True, markup=False)
    out.print(f"\nserving on {base} (Ctrl-C stops it)", highlight=False)


@app.command("experiments")
@friendly
def experiments_cmd() -> None:
    """Registered versions per model: aliases, gates and test metrics."""
    from kundenwert.experiments.registry import describe_versions
    from kundenwert.models.specs import SPECS

    t = Table(title="registered models")
    for c in ("model", "version", "aliases", "gates", "metrics"):
        t.add_column(c)
    for model in SPECS:
        for v in describe_versions(model):
            metrics = ", ".join(f"{k} {x:.3f}" for k, x in v["metrics"].items() if k in _SHOWN)
            gates = {"True": "passed", "False": "failed"}.get(str(v["gates_passed"]), "-")
            t.add_row(
                f"kundenwert-{model}", str(v["version"]), ", ".join(v["aliases"]) or "-", gates, metrics
            )
    out.print(t)


@app.command("promote")
@friendly
def promote_cmd(
    model: Annotated[str, typer.Argument(help="The model, as `kundenwert experiments` lists it.")],
    version: Annotated[int, typer.Argument(help="The registered version to make champion.")],
) -> None:
    """Make a version the champion by hand; only a version whose gates passed may be."""
    from kundenwert.training.promotion import promote_by_hand

    promote_by_hand(model, version)
    out.print(f"kundenwert-{model} version {version} is now the champion")


@datasets_app.command("cdnow")
@friendly
def cdnow_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder to write customers.csv and purchases.csv into.")],
    sample: Annotated[
        bool, typer.Option("--sample", help="The 2,357-customer sample of the BTYD papers.")
    ] = False,
) -> None:
    """Write the real CDNOW data (shipped with lifetimes) in the contract format."""
    from kundenwert.datasets.cdnow import write_cdnow

    rows = write_cdnow(directory, sample=sample)
    _rows_table(f"CDNOW {'sample' if sample else 'full cohort'} in {directory}", rows)


def _rows_table(title: str, rows: dict[str, int]) -> None:
    t = Table(title=title)
    t.add_column("table")
    t.add_column("rows", justify="right")
    for name, n in rows.items():
        t.add_row(name, f"{n:,}")
    out.print(t)


def main() -> None:
    # (the pyspark-on-pandas-3 warning is filtered in ``kundenwert/__init__.py``, for every entry)
    app()


if __name__ == "__main__":
    main()
