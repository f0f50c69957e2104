"""bench/results.md from the figures bench/run.py collected: medians, spreads, ratios, targets.

`python -m bench.report` writes bench/results.md again from the last run's raw figures
(reports/bench/results.json), for a change to the report's wording without a new run.

Every figure is the median over the repetitions with its spread (min–max) beside it. Ratios
are taken within each repetition and then summarized the same way; a 16-client figure is weighed
against the PK-route runs just before and after it (bench/run.py, PkBracket; pk_for below),
seconds apart, so the machine's drift during a run stays out of the ratio.
"""

from __future__ import annotations

import math
import statistics

CLIENTS = (1, 4, 16)
PAGE_NAMES = {
    "dashboard": "dashboard (5 accounts, last 5 entries each)",
    "transactions": "transactions, page 1",
    "filtered": "transactions, all five filters",
    "page200": "transactions, page 200 (of 5,000 rows)",
    "hops": "audit transactions, 100 rel=\"next\" hops",
}
TARGET_TRANSFER = 0.40
TARGET_TAIL = 4.0
TARGET_SCALE = 1.5
TARGET_PAGE_VS_PK = 3.0
TARGET_LOGIN = 1.3
# The uniform transfers on SQLite's unsynced diagnostic server (bench/app.py); key prefix.
UNSYNCED = "transfer.uniform.unsynced"


def _ok(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def med(values: list[float]) -> float:
    values = _ok(values)
    return statistics.median(values) if values else float("nan")


def fmt(values: list[float], digits: int = 1, unit: str = "") -> str:
    values = _ok(values)
    if not values:
        return "—"
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:,.{digits}f}{unit}"
    return f"{middle:,.{digits}f}{unit} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def ratios(a: list[float], b: list[float], scale: float = 1.0) -> list[float]:
    return [scale * x / y for x, y in zip(a, b) if y and not math.isnan(x) and not math.isnan(y)]


def pk_for(v: dict, key: str, stat: str, clients: int = 16) -> list[float]:
    """The PK route's `stat` (rate, p50, cpu_app_ms, cpu_db_ms) to weigh figure `key` against,
    one value per repetition: the mean of the PK runs just before and just after it (bench/run.py,
    PkBracket) when the run has them, else the repetition's ceiling run at `clients` clients."""
    return v.get(f"{key}.pk.{stat}") or v.get(f"ceiling.pk.{clients}.{stat}", [])


def cpu_totals(v: dict, key: str) -> list[float]:
    """Per repetition, the app's plus the database server's CPU ms per request of figure `key`."""
    return [a + d for a, d in zip(v.get(key + ".cpu_app_ms", []), v.get(key + ".cpu_db_ms", []))]


def pk_cpu_totals(v: dict, key: str) -> list[float]:
    """Per repetition, the PK route's CPU ms per request (app plus database server) to weigh
    figure `key` against (pk_for)."""
    return [a + d for a, d in zip(pk_for(v, key, "cpu_app_ms"), pk_for(v, key, "cpu_db_ms"))]


def safe(render):
    """Run one section's renderer; a failure becomes a line in the file instead of losing the run."""
    def wrapped(*args, **kwargs) -> list[str]:
        try:
            return render(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the figures must still be written
            return [f"(section {render.__name__} could not be rendered: {type(exc).__name__}: {exc})", ""]
    return wrapped


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


def render(meta: dict, values: dict, notes: dict, errors: dict) -> str:
    m = meta["machine"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run.py); the method, the data and how to read the ratios are in",
        "bench/README.md. Every figure: median over the repetitions, (min–max) beside it. Ratios are",
        "computed within each repetition, then summarized the same way. A 16-client figure weighed against",
        "the PK route (the signed-in floor, transfers, the pages on the big database, the audit append) is",
        "weighed against the mean of two PK-route runs at 16 clients, one just before it and one just after;",
        "the ceilings table shows the repetition's own PK-route runs.",
        "",
        "## The run",
        "",
        f"- date: {meta['started']}; {meta['minutes']} minutes; {meta['reps']} repetitions of {meta['duration']:g} s per figure"
        + (" (**quick mode: big database 10x smaller**)" if meta.get("quick") else ""),
        f"- machine: {m['cpu']}; {m['os']}",
        f"- load average (1 min) at start {meta['loadavg_start'][0]:.2f}, at end {meta['loadavg_end'][0]:.2f}; "
        "per repetition below (the benchmark's own server, database and load tool count in it).",
        "- gunicorn (gunicorn.conf.py, which picks the threads by database): "
        + "; ".join(f"{backend}: {served_configuration(served)}" for backend, served in meta.get("gunicorn", {}).items())
        + f"; the load tool: {m['wrk']} with bench/wrk/*.lua, one connection per client, on the same machine",
        f"- versions: Python {m['python']}; {m['postgresql']}; SQLite {m['sqlite']}; {m['pgbench']}; {m['packages']}",
    ]
    for backend, seeds in _seeds(meta).items():
        lines.append(f"- seeded ({backend}): " + "; ".join(seeds))
    for backend, (hash_ms, described) in meta.get("hash", {}).items():
        lines.append(f"- password hash ({backend} run): {described}")
    lines.append("")
    for backend in values:
        served = meta.get("gunicorn", {}).get(backend, {})
        lines += render_backend(backend, values[backend], notes.get(backend, []), errors.get(backend, {}),
                                served.get("worker_connections"), sync=served.get("threads") == 1)
    return "\n".join(lines) + "\n"


def served_configuration(served: dict) -> str:
    """"2 workers x 2 threads (gthread, each worker holding at most 8 connections)" from a
    backend's gunicorn configuration in the run's meta (bench/run.py server_configuration)."""
    kind = "sync: one connection at a time, closed after each answer" if served["threads"] == 1 else "gthread"
    cap = served.get("worker_connections")
    return (f"{served['workers']} workers x {served['threads']} thread{'s' if served['threads'] > 1 else ''} "
            f"({kind}" + (f", each worker holding at most {cap} connections" if cap else "") + ")")


def _seeds(meta: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, seed in meta.get("seed", {}).items():
        backend, size = key.split(".")
        out.setdefault(backend, []).append(
            f"{size}: {seed['customers']:,} customers, {seed['accounts']:,} accounts, {seed['transfers']:,} transfers, "
            f"{seed['ledger_rows']:,} ledger rows, {seed['audit_rows']:,} audit rows in {seed['seconds_total']:.0f} s")
    return out


def render_backend(backend: str, v: dict, notes: list[str], errors: dict, cap: int | None = None, *,
                   sync: bool = False) -> list[str]:
    get = lambda key: v.get(key, [])  # noqa: E731
    title = "PostgreSQL" if backend == "postgresql" else "SQLite"
    db_ceiling = "pgbench, bench/pgbench_transfer.sql" if backend == "postgresql" else "bench/sqlite_ceiling.py"
    out = [f"## {title}", "", f"Load average per repetition: {', '.join(f'{x:.2f}' for x in get('loadavg'))}.", ""]

    out += ["### Ceilings (same run, same gunicorn configuration)", "",
            "| clients | short text: req/s | p50 ms | one PK SELECT (ORM): req/s | p50 ms | p99 ms | "
            f"transfer SQL alone ({db_ceiling}): transfers/s |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for c in CLIENTS:
        out.append(f"| {c} | {fmt(get(f'ceiling.text.{c}.rate'), 0)} | {fmt(get(f'ceiling.text.{c}.p50'), 2)} | "
                   f"{fmt(get(f'ceiling.pk.{c}.rate'), 0)} | {fmt(get(f'ceiling.pk.{c}.p50'), 2)} | "
                   f"{fmt(get(f'ceiling.pk.{c}.p99'), 2)} | {fmt(get(f'ceiling.db.{c}'), 0)} |")
    out.append("")
    out += ["The signed-in floor (`/bench/signed-in`, bench/app.py: what every signed-in page does before any work "
            "of its own — the session, the user loader's SELECT, the session rules, the headers, the layout with its "
            f"navigation and CSRF token), 16 clients: {fmt(get('ceiling.floor.16.rate'), 0)} req/s, p50 "
            f"{fmt(get('ceiling.floor.16.p50'), 2)} ms, p99 {fmt(get('ceiling.floor.16.p99'), 2)} ms; "
            f"÷ the PK route's p50: {fmt(ratios(get('ceiling.floor.16.p50'), pk_for(v, 'ceiling.floor.16', 'p50')), 2)}.", ""]
    if get("ceiling.append.16.rate"):
        out += ["The durable audit append (`/bench/audit-append`, bench/app.py: one `AUDIT_VIEWED` row hashed under "
                "the chain head's lock and committed before the answer, the write DESIGN.md §4 makes every audit view "
                f"do, and nothing else), 16 clients: {fmt(get('ceiling.append.16.rate'), 0)} req/s, p50 "
                f"{fmt(get('ceiling.append.16.p50'), 2)} ms, p99 {fmt(get('ceiling.append.16.p99'), 2)} ms; "
                f"÷ the PK route's p50: {fmt(ratios(get('ceiling.append.16.p50'), pk_for(v, 'ceiling.append.16', 'p50')), 2)}.", ""]

    out += ["### Transfers (GET form + POST, over HTTP with real sessions and CSRF tokens)", "",
            "| pattern | clients | transfers/s | POST p50 ms | POST p99 ms | p99/p50 | GET form p50 ms | errors | "
            "2 x transfers/s ÷ PK route req/s | transfers/s ÷ transfer SQL alone |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def transfer_row(label: str, c: int, k: str) -> str:
        return (f"| {label} | {c} | {fmt(get(k + '.rate'))} | {fmt(get(k + '.p50'))} | {fmt(get(k + '.p99'))} | "
                f"{fmt(ratios(get(k + '.p99'), get(k + '.p50')), 2)} | {fmt(get(k + '.form_p50'))} | "
                f"{errors.get(k, 0)} | {fmt(ratios(get(k + '.rate'), pk_for(v, k, 'rate', c), 2.0), 2)} | "
                f"{fmt(ratios(get(k + '.rate'), get(f'ceiling.db.{c}')), 2)} |")

    for pattern in ("uniform", "hot"):
        for c in CLIENTS:
            out.append(transfer_row(pattern, c, f"transfer.{pattern}.{c}"))
    if get(f"{UNSYNCED}.16.rate"):
        out.append(transfer_row("uniform, commits not synced (a measurement only: bench/app.py)", 16,
                                f"{UNSYNCED}.16"))
    out.append("")

    out += ["### Pages at 16 clients: 1,000,000 ledger rows against 10,000", "",
            "| page | p50 ms, big | p50 ms, small | big ÷ small | big p50 ÷ PK route p50 | big p50 ÷ signed-in floor p50 "
            "| req/s, big | p99 ms, big | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label in PAGE_NAMES.items():
        big, small = f"page.{name}.big", f"page.{name}.small"
        out.append(
            f"| {label} | {fmt(get(big + '.p50'))} | {fmt(get(small + '.p50'))} | "
            f"{fmt(ratios(get(big + '.p50'), get(small + '.p50')), 2)} | "
            f"{fmt(ratios(get(big + '.p50'), pk_for(v, big, 'p50')), 2)} | "
            f"{fmt(ratios(get(big + '.p50'), get('ceiling.floor.16.p50')), 2)} | {fmt(get(big + '.rate'), 0)} | "
            f"{fmt(get(big + '.p99'))} | {errors.get(big, 0) + errors.get(small, 0)} |")
    out.append("")

    out += ["### Login (1 client)", "",
            "| login POST p50 ms | p99 ms | one hash verification, ms | login p50 ÷ hash | errors |",
            "|---:|---:|---:|---:|---:|",
            f"| {fmt(get('login.p50'))} | {fmt(get('login.p99'))} | {fmt(get('hash_ms'))} | "
            f"{fmt(ratios(get('login.p50'), get('hash_ms')), 2)} | {errors.get('login', 0)} |", ""]

    out += safe(cpu_table)(backend, v)
    out += safe(machine_table)(backend, v)
    out += safe(targets)(v, errors)
    out += safe(analysis)(backend, v, notes, cap, sync=sync)
    out += safe(sweep_table)(v, errors)
    checks = [n for n in notes if not n.startswith(("profile:", "profile-top:"))]
    if checks:
        out += ["### Checks after the run", ""] + [f"- {n}" for n in checks] + [""]
    profiles = [n for n in notes if n.startswith(("profile:", "profile-top:"))]
    if profiles:
        out += ["### Where the workers' CPU goes (py-spy samples of running threads, all workers, by the innermost library)", ""]
        for note in profiles:
            kind, name, data = note.split(":", 2)
            out.append(f"- {name}{', busiest functions' if kind == 'profile-top' else ''}: {data}")
        out.append("")
    return out


CPU_ROWS = (
    ("ceiling.text.16", "short text"),
    ("ceiling.pk.16", "one PK SELECT (ORM)"),
    ("ceiling.floor.16", "signed-in floor (empty page)"),
    ("ceiling.append.16", "one durable audit append (`AUDIT_VIEWED`), nothing else"),
    ("transfer.uniform.16", "a whole transfer (GET form + POST)"),
    (f"{UNSYNCED}.16", "a whole transfer, commits not synced (a measurement only)"),
    *((f"page.{name}.big", label + ", 1,000,000 rows") for name, label in PAGE_NAMES.items()),
)


def cpu_table(backend: str, v: dict) -> list[str]:
    """CPU per operation at 16 clients: the app's processes and the database server's (/proc)."""
    get = lambda key: v.get(key, [])  # noqa: E731
    if not get("ceiling.pk.16.cpu_app_ms"):
        return []
    server = backend == "postgresql"
    out = ["### CPU per operation at 16 clients (user + system time of the processes, from /proc)", "",
           "Throughput ratios follow from these: the machine's two cores are the bound of every figure at 16 "
           "clients. CPU per request is also the steadier measure of whether a page grows with the data: a p50 "
           "at 16 clients is mostly queueing, and moves with the machine's other load. " + ("The database column is the PostgreSQL server's processes (postmaster and backends)."
                          if server else "SQLite runs inside the app's processes, so its work is in the app column."),
           "", "| operation | app CPU ms | database server CPU ms | total ms | ÷ PK route total | "
           "÷ the same page at 10,000 rows |",
           "|---|---:|---:|---:|---:|---:|"]

    for key, label in CPU_ROWS:
        app, db = get(key + ".cpu_app_ms"), get(key + ".cpu_db_ms")
        if not app:
            continue
        total = cpu_totals(v, key)
        scale = fmt(ratios(total, cpu_totals(v, key[:-len(".big")] + ".small")), 2) if key.endswith(".big") else ""
        out.append(f"| {label} | {fmt(app, 2)} | {fmt(db, 2) if server else '—'} | {fmt(total, 2)} | "
                   f"{fmt(ratios(total, pk_cpu_totals(v, key)), 2)} | {scale} |")
    out.append("")
    return out


MACHINE_ROWS = (
    ("ceiling.pk.16", "one PK SELECT (ORM)"),
    ("transfer.uniform.16.pk", "one PK SELECT (ORM), the runs around the uniform transfers"),
    ("transfer.uniform.16", "a whole transfer (GET form + POST), uniform"),
    ("transfer.hot.16.pk", "one PK SELECT (ORM), the runs around the hot transfers"),
    ("transfer.hot.16", "a whole transfer (GET form + POST), hot"),
    (f"{UNSYNCED}.16.pk", "one PK SELECT (ORM), the runs around the unsynced transfers"),
    (f"{UNSYNCED}.16", "a whole transfer, uniform, commits not synced (a measurement only)"),
    *((f"page.{name}.big", label + ", 1,000,000 rows") for name, label in PAGE_NAMES.items()),
)
MACHINE_COLUMNS = ("app", "db", "load", "other", "idle", "steal")


def machine_table(backend: str, v: dict) -> list[str]:
    """Where the machine's time went during the 16-client runs (bench/run.py machine_split), in
    percent of both cores' time, with the load tool's CPU per operation."""
    get = lambda key: v.get(key, [])  # noqa: E731
    rows = [(key, label) for key, label in MACHINE_ROWS if get(key + ".machine_app")]
    if not rows:
        return []
    database = "the PostgreSQL server's processes" if backend == "postgresql" else \
        "the PostgreSQL server's processes (idle here: SQLite runs in the app's)"
    out = ["### Where the machine's time went at 16 clients (percent of both cores' time)", "",
           "The app's processes and the database server's (/proc/<pid>/stat), the load tool (wrk, on the same "
           "machine: its own CPU, read when it ends), everything else that ran, idle, and steal (time the "
           f"hypervisor gave to other guests), all from /proc/stat over each run; database: {database}. A "
           "throughput ratio equals the ratio of the app's and the database's CPU per operation only when both "
           "runs give them the same share of the machine.", "",
           "| operation | app % | database % | load tool % | other % | idle % | steal % | load tool CPU ms per operation |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, label in rows:
        cells = " | ".join(fmt(get(f"{key}.machine_{part}"), 1) for part in MACHINE_COLUMNS)
        out.append(f"| {label} | {cells} | {fmt(get(key + '.cpu_load_ms'), 2)} |")
    out.append("")
    return out


def _unsynced_sentence(v: dict) -> str:
    """What SQLite's durable commit costs a transfer: the uniform transfers at 16 clients against
    the same on the server whose commits skip the sync (bench/app.py), each ratio weighed against
    its own PK runs; "" when the run has no such figure (PostgreSQL, or an older run)."""
    get = lambda k: v.get(k, [])  # noqa: E731
    synced, unsynced = "transfer.uniform.16", f"{UNSYNCED}.16"
    if not get(unsynced + ".rate") or not get(synced + ".rate"):
        return ""
    ratio = med(ratios(get(synced + ".rate"), pk_for(v, synced, "rate"), 2.0))
    ratio_unsynced = med(ratios(get(unsynced + ".rate"), pk_for(v, unsynced, "rate"), 2.0))
    sentence = (
        f" The durable commit's part: the same uniform transfers at 16 clients, on a second server whose SQLite "
        f"connections skip the sync of each commit (`PRAGMA synchronous = OFF`, bench/app.py: a measurement only, "
        f"the app always commits with `synchronous = FULL`), made {med(get(unsynced + '.rate')):,.1f} transfers/s "
        f"against {med(get(synced + '.rate')):,.1f}: 2 x transfers/s ÷ PK route {ratio_unsynced:.2f} against "
        f"{ratio:.2f}, {med(get(unsynced + '.cpu_app_ms')):.2f} ms of the app's CPU per transfer against "
        f"{med(get(synced + '.cpu_app_ms')):.2f}, the machine idle "
        f"{med(get(unsynced + '.machine_idle')):.0f}% against {med(get(synced + '.machine_idle')):.0f}% and "
        f"stolen by the hypervisor {med(get(unsynced + '.machine_steal')):.0f}% against "
        f"{med(get(synced + '.machine_steal')):.0f}%.")
    if math.isnan(ratio) or math.isnan(ratio_unsynced):
        return sentence
    if ratio >= TARGET_TRANSFER:
        return sentence
    if ratio_unsynced >= TARGET_TRANSFER:
        return sentence + (f" Without the wait for the disk the target ({TARGET_TRANSFER:.2f}) is met: what stops "
                           "it is the durability the issue puts first (each commit synced while SQLite's one write "
                           "lock is held), not the app's own work.")
    share = (ratio_unsynced - ratio) / (TARGET_TRANSFER - ratio)
    return sentence + (f" The sync accounts for {100 * max(0.0, share):.0f}% of the distance to the target "
                       f"({TARGET_TRANSFER:.2f}); the rest is the app's own work per transfer weighed against a PK "
                       "route that, with SQLite inside the process, pays no round trip to a database server.")


def _machine_sentence(v: dict, key: str, what: str) -> str:
    """How the machine's time split during `key`'s runs against the PK runs around them."""
    get = lambda k: med(v.get(k, []))  # noqa: E731
    if math.isnan(get(f"{key}.machine_app")) or math.isnan(get(f"{key}.pk.machine_app")):
        return ""
    busy = get(f"{key}.machine_app") + get(f"{key}.machine_db")
    pk_busy = get(f"{key}.pk.machine_app") + get(f"{key}.pk.machine_db")
    return (f" During the {what} runs the app and the database had {busy:.0f}% of the machine's time against "
            f"{pk_busy:.0f}% in the PK runs around them; the load tool {get(key + '.machine_load'):.0f}% against "
            f"{get(key + '.pk.machine_load'):.0f}% ({get(key + '.cpu_load_ms'):.2f} ms of its CPU per operation "
            f"against {get(key + '.pk.cpu_load_ms'):.2f}), other processes {get(key + '.machine_other'):.0f}% "
            f"against {get(key + '.pk.machine_other'):.0f}%, idle {get(key + '.machine_idle'):.0f}% against "
            f"{get(key + '.pk.machine_idle'):.0f}%, steal {get(key + '.machine_steal'):.0f}% against "
            f"{get(key + '.pk.machine_steal'):.0f}% (the table above).")


def targets(v: dict, errors: dict) -> list[str]:
    """The issue's targets, met or not. A ratio to the PK route is judged against the PK runs
    around the figure (pk_for); the ratio against the repetition's own ceiling run, minutes
    away, is shown beside it."""
    get = lambda key: v.get(key, [])  # noqa: E731
    rows = []

    def shown(value: float) -> str:
        return "—" if math.isnan(value) else f"{value:.2f}"

    for pattern in ("uniform", "hot"):
        k = f"transfer.{pattern}.16"
        ratio = med(ratios(get(k + ".rate"), pk_for(v, k, "rate"), 2.0))
        unbracketed = med(ratios(get(k + ".rate"), get("ceiling.pk.16.rate"), 2.0))
        tail = med(ratios(get(k + ".p99"), get(k + ".p50")))
        rows.append((f"transfer ({pattern}, 16 clients) ≥ {TARGET_TRANSFER:.2f} x PK route", f"{ratio:.2f}",
                     shown(unbracketed), verdict(ratio >= TARGET_TRANSFER if not math.isnan(ratio) else None)))
        rows.append((f"transfer ({pattern}, 16) POST p99 ≤ {TARGET_TAIL:g} x p50", f"{tail:.2f}", "",
                     verdict(tail <= TARGET_TAIL if not math.isnan(tail) else None)))
        rows.append((f"transfer ({pattern}, 16) without errors", str(errors.get(k, 0)), "",
                     verdict(errors.get(k, 0) == 0)))
    for name, label in PAGE_NAMES.items():
        big, small = f"page.{name}.big", f"page.{name}.small"
        scale = med(ratios(get(big + ".p50"), get(small + ".p50")))
        vs_pk = med(ratios(get(big + ".p50"), pk_for(v, big, "p50")))
        unbracketed = med(ratios(get(big + ".p50"), get("ceiling.pk.16.p50")))
        rows.append((f"{label}: big ≤ {TARGET_SCALE:g} x small", f"{scale:.2f}", "",
                     verdict(scale <= TARGET_SCALE if not math.isnan(scale) else None)))
        rows.append((f"{label}: ≤ {TARGET_PAGE_VS_PK:g} x PK route p50", f"{vs_pk:.2f}", shown(unbracketed),
                     verdict(vs_pk <= TARGET_PAGE_VS_PK if not math.isnan(vs_pk) else None)))
    login = med(ratios(get("login.p50"), get("hash_ms")))
    rows.append((f"login p50 ≤ {TARGET_LOGIN:g} x one hash verification", f"{login:.2f}", "",
                 verdict(login <= TARGET_LOGIN if not math.isnan(login) else None)))
    out = ["### Targets (issue item 3)", "",
           "Ratios to the PK route are judged against its runs just before and after the figure; the third "
           "column gives the same ratio against the repetition's own PK-route run at 16 clients (the ceilings "
           "table), minutes away from the figure.", "",
           "| target | measured (median) | against the repetition's PK run | |", "|---|---:|---:|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out.append("")
    return out


def sweep_table(v: dict, errors: dict) -> list[str]:
    configs = sorted({key.split(".")[1] for key in v if key.startswith("sweep.")},
                     key=lambda c: tuple(int(x) for x in c.split("x")))
    if not configs:
        return []
    out = ["### gunicorn workers x threads (16 clients, big database; two runs each, the second pass in reverse order)", "",
           "| workers x threads | PK route req/s | p50 ms | transfers/s | POST p50 ms | POST p99 ms | "
           "2 x transfers/s ÷ PK req/s | transactions page 1 req/s | p50 ms | errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in configs:
        k = f"sweep.{c}"
        g = lambda suffix: v.get(k + suffix, [])  # noqa: E731
        errs = sum(errors.get(f"{k}.{x}", 0) for x in ("pk", "transfer", "page"))
        out.append(f"| {c} | {fmt(g('.pk.rate'), 0)} | {fmt(g('.pk.p50'))} | {fmt(g('.transfer.rate'))} | "
                   f"{fmt(g('.transfer.p50'))} | {fmt(g('.transfer.p99'))} | "
                   f"{fmt(ratios(g('.transfer.rate'), g('.pk.rate'), 2.0), 2)} | {fmt(g('.page.rate'), 0)} | "
                   f"{fmt(g('.page.p50'))} | {errs} |")
    out.append("")
    return out


def _profile(notes: list[str], name: str) -> dict[str, float]:
    import json

    for note in notes:
        if note.startswith(f"profile:{name}:"):
            return json.loads(note.split(":", 2)[2])
    return {}


def _shares(profile: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0f}%" for name, share in profile.items()) or "no profile in this run"


def _cpu_spread(notes: list[str]) -> str:
    """The transfer's GIL-held profile: by library, and its busiest single functions."""
    import json

    shares = _profile(notes, "transfer, GIL held")
    top = next((json.loads(note.split(":", 2)[2]) for note in notes
                if note.startswith("profile-top:transfer, GIL held:")), [])
    if not shares or not top:
        return ""
    busiest = "; ".join(f"{function} {share:.1f}%" for function, share in top)
    return (f" Counting only the samples in which a worker held the GIL (its Python CPU, without the waits for "
            f"the database): {_shares(shares)}. The busiest single functions (innermost frame): {busiest} — the "
            f"cost is spread over the whole stack, not in one place the app could take out.")


def analysis(backend: str, v: dict, notes: list[str], cap: int | None = None, *, sync: bool = False) -> list[str]:
    """What bounds each figure, from this run's own measurements. cap: the gunicorn workers'
    `worker_connections` in the run (None: gunicorn's default, the clients split as they fell).
    sync: the servers ran gunicorn's sync workers, one request per connection."""
    get = lambda key: v.get(key, [])  # noqa: E731
    out = ["### What bounds each figure (this run's measurements)", ""]
    app_tps = med(get("transfer.uniform.16.rate"))
    db_tps = med(get("ceiling.db.16"))
    pk = med(pk_for(v, "transfer.uniform.16", "rate"))
    text = med(get("ceiling.text.16.rate"))
    if not math.isnan(app_tps) and not math.isnan(db_tps) and db_tps > 0:
        out.append(
            f"- **Transfers** are not bounded by the database: at 16 clients the app made {app_tps:,.1f} transfers/s "
            f"while the same SQL alone ran at {db_tps:,.0f}/s ({100 * app_tps / db_tps:.0f}% of it). Each transfer is two "
            f"requests through Flask, the session, CSRF, WTForms and the ORM; the PK route ({pk:,.0f} req/s) pays almost "
            f"none of that (the short text route: {text:,.0f} req/s). Where the workers' time went during transfers "
            f"(py-spy, innermost library): {_shares(_profile(notes, 'transfer'))}.{_cpu_spread(notes)}"
            + _machine_sentence(v, "transfer.uniform.16", "uniform transfer") + _unsynced_sentence(v))
    page = med(get("page.transactions.big.p50"))
    pk_p50 = med(pk_for(v, "ceiling.floor.16", "p50"))
    floor_p50 = med(get("ceiling.floor.16.p50"))
    floor_rate = med(get("ceiling.floor.16.rate"))
    if not math.isnan(app_tps) and not math.isnan(floor_rate) and app_tps > 0:
        out.append(
            f"- A whole transfer (form and POST) costs as much as {floor_rate / app_tps:.1f} signed-in floors "
            f"({floor_rate:,.0f} req/s at 16 clients): the floor is not what makes it dear, its own work is — the "
            "accounts read for the form's choices, the form (its plain fields rendered once per state: "
            "app/fragments.py) and its validation, and the POST's statements (8 on "
            "PostgreSQL, 9 on SQLite; tests/perf/test_statement_counts.py), each paying SQLAlchemy's and the "
            "driver's Python.")
    if not math.isnan(page) and not math.isnan(pk_p50):
        out.append(
            f"- **Pages** do not grow with the data (big ÷ small above), but each costs several times the PK route: at "
            f"16 clients a p50 is mostly the queue behind the other clients' requests, so the p50 ratio is the ratio of "
            f"CPU per request. The signed-in floor's p50 is {floor_p50:.1f} ms against the PK route's {pk_p50:.1f} ms; "
            f"transactions page 1 ({page:.1f} ms) is {page / floor_p50:.1f} floors: its own work is one or two "
            f"indexed queries and the plain rows they read, and the template — 25 table rows and the filter form "
            f"(Bootstrap-Flask's `bootstrap5/` macros, DESIGN.md §5b, rendered once per set of filter values: "
            f"app/fragments.py). Workers' time on transactions page 1: "
            f"{_shares(_profile(notes, 'transactions page'))}.")
    pk_spread = get("ceiling.pk.16.client_spread")
    page_spreads = [med(values) for key, values in sorted(v.items())
                    if key.startswith("page.") and key.endswith(".big.client_spread") and values]
    if pk_spread and page_spreads:
        if sync:
            lead = ("- **No client is tied to a worker**: gunicorn's sync workers answer one request per connection "
                    "and close it, so each of wrk's requests reconnects and goes to whichever worker is free. ")
            tail = (": a p50 ratio at 16 clients comes close to the ratio of CPU per request (the table above), "
                    "which does not depend on how the requests fell.")
        elif cap:
            lead = (f"- **Each worker serves its share of the 16 clients**: with keep-alive, each of wrk's connections "
                    f"stays on the gunicorn worker that accepted it, and in this run each worker held at most {cap} of "
                    f"them (bench/run.py, worker_connections), so they could not split by which worker woke first (a "
                    f"14/2 split, seen before the cap, made one client's p50 seven times another's). ")
            tail = (": with every worker serving as many clients, a p50 ratio at 16 clients comes close to the ratio "
                    "of CPU per request (the table above), which does not depend on the split.")
        else:
            lead = ("- **A p50 at 16 clients depends on how the clients' connections split between the workers**: "
                    "with keep-alive, each of wrk's 16 connections stays on the gunicorn worker that accepted it, and "
                    "the workers seldom get equal shares (10/6 makes the slowest client's p50 about 1.8 times the "
                    "fastest one's; 14/2, seen, about 7). ")
            tail = (", so each p50 ratio above moves with two such draws from one repetition to the next; CPU per "
                    "request (the table above) does not depend on them.")
        out.append(lead + f"The slowest client's p50 was {med(pk_spread):.1f} times the fastest one's on the PK "
                   f"route (median of the repetitions; {min(pk_spread):.1f} to {max(pk_spread):.1f}) and "
                   f"{min(page_spreads):.1f} to {max(page_spreads):.1f} times on the pages at 1,000,000 rows" + tail)
    out += _deep_page_analysis(backend, v)
    out += _hops_analysis(backend, v)
    login = med(get("login.p50"))
    hash_ms = med(get("hash_ms"))
    if not math.isnan(login) and not math.isnan(hash_ms):
        out.append(
            f"- **Login** is bounded by the hash, by design: one Argon2id verification took {hash_ms:.0f} ms in this "
            f"process and a login POST {login:.0f} ms (p50) — the rest is the throttle's two indexed counts, the user "
            f"look-up, the audit row and the session. Workers' time during logins: {_shares(_profile(notes, 'login'))}.")
    out.append("")
    return out


def _deep_page_analysis(backend: str, v: dict) -> list[str]:
    """Page 200 against page 1 of the same customer (the heavy one, 5,000 entries): what
    stepping over the newer entries costs, which DESIGN.md section 8's numbered pages require.
    Returns one bullet, or nothing when the run lacks either page's CPU figures."""
    deep, first = cpu_totals(v, "page.page200.big"), cpu_totals(v, "page.transactions.big")
    deep_pk, first_pk = pk_cpu_totals(v, "page.page200.big"), pk_cpu_totals(v, "page.transactions.big")
    if not (deep and first and deep_pk and first_pk):
        return []
    steps = [d - f for d, f in zip(deep, first)]
    if backend == "sqlite":
        where = "in the app's processes, where SQLite runs"
    else:
        deep_db = med(v.get("page.page200.big.cpu_db_ms", []))
        first_db = med(v.get("page.transactions.big.cpu_db_ms", []))
        where = f"{deep_db:.2f} ms of the database server's CPU against {first_db:.2f} ms"
    return [f"- **Page 200** costs more than page 1 by design: DESIGN.md §8 gives the customer's list numbered pages "
            f"(`?page=N`; a keyset cursor only to the audit log and the all-transactions view), so page 200 must find "
            f"and step over the customer's 4,975 newer entries before reading its 25 (merged from each account's walk "
            f"down the covering index, never sorted: `_customer_page_statement`, app/banking/services.py). On the same "
            f"customer it costs {med(deep):.2f} ms of CPU against {med(first):.2f} ms for page 1 ({where}): the "
            f"stepping, page 200 less page 1 within each repetition, is {fmt(steps, 2)} ms (median, min–max), "
            f"{med(ratios(steps, deep_pk)):.2f} PK routes, and page 200 costs "
            f"{med(ratios(deep, deep_pk)):.2f} PK routes against page 1's {med(ratios(first, first_pk)):.2f}. "
            f"It grows with the page number, not with the history (big ÷ small above)."]


def _hops_analysis(backend: str, v: dict) -> list[str]:
    """The audit hop against transactions page 1, the PK route and the durable-append route:
    how much of a hop is the append DESIGN.md §4 requires, and what the rest of it costs."""
    get = lambda key: v.get(key, [])  # noqa: E731
    hops, pages, appends = (cpu_totals(v, key) for key in ("page.hops.big", "page.transactions.big", "ceiling.append.16"))
    hop, page = med(hops), med(pages)
    if math.isnan(hop) or math.isnan(page):
        return []
    hop_db, page_db = med(get("page.hops.big.cpu_db_ms")), med(get("page.transactions.big.cpu_db_ms"))
    where = ("in the app's processes, where SQLite runs" if backend == "sqlite"
             else f"{hop_db:.2f} ms of the database server's CPU against {page_db:.2f} ms for page 1")
    text = (f"- **Audit hops** write where the other pages only read: DESIGN.md §4 makes every audit view append an "
            f"`AUDIT_VIEWED` row to the hash chain, under the chain head's lock, and commit it durably before the page "
            f"is answered. A hop costs {hop:.2f} ms of CPU against {page:.2f} ms for transactions page 1 ({where}); "
            f"its page holds 25 entries with each entry's account, owner and counterparty, and a larger filter form.")
    # Per repetition, each figure against the PK runs around it (pk_for).
    hop_pk, page_pk, append_pk = (pk_cpu_totals(v, key) for key in ("page.hops.big", "page.transactions.big",
                                                                      "ceiling.append.16"))
    if appends and append_pk and hop_pk and page_pk:
        extras = [a - p for a, p in zip(appends, append_pk)]
        lock = ("SQLite's one write lock (`BEGIN IMMEDIATE`)" if backend == "sqlite"
                else "the chain head's row lock (`FOR UPDATE`)")
        without = med([(h - e) / p for h, e, p in zip(hops, extras, hop_pk)])
        append_cpu, append_p50 = med(ratios(appends, append_pk)), med(ratios(get("ceiling.append.16.p50"),
                                                                             pk_for(v, "ceiling.append.16", "p50")))
        text += (f" The append alone (`/bench/audit-append`) costs {med(appends):.2f} ms, {med(extras):.2f} ms more "
                 f"than the PK route's one read ({med(append_pk):.2f} ms): without it, a hop would cost "
                 f"{without:.2f} PK routes (page 1: {med(ratios(pages, page_pk)):.2f}; with it: "
                 f"{med(ratios(hops, hop_pk)):.2f}). The append's wait weighs more than its CPU: its CPU is "
                 f"{append_cpu:.2f} times the PK route's and its p50 {append_p50:.2f} times, because appends queue "
                 f"for {lock}, held until the row's commit is durable. Against that ceiling, a "
                 f"request that must make the write, a hop's p50 is "
                 f"{med(ratios(get('page.hops.big.p50'), get('ceiling.append.16.p50'))):.2f} times the append "
                 f"route's.")
    return [text]


def main(argv: list[str] | None = None) -> int:
    """Re-render bench/results.md from reports/bench/results.json (or the path given)."""
    import json
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else repo / "reports" / "bench" / "results.json"
    data = json.loads(source.read_text())
    (repo / "bench" / "results.md").write_text(render(data["meta"], data["values"], data["notes"], data["errors"]))
    print(f"wrote {repo / 'bench' / 'results.md'} from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
