#!/usr/bin/env python3
"""Seeds a utc-gateway SQLite database with many leads, for the call-route benchmark.

Inserts COUNT leads straight into the gateway's SQLite file (see
migrations/sqlite/0001_init.sql): one `leads` row each (id = lowercase hyphenated
uuid4, first_name "Bench <i>", phone "+91" + str(NUMBER_BASE + i), secondary_numbers
'[]', fields '{}', owner_id, created_at/updated_at in integer milliseconds) and one
`lead_numbers (number, lead_id)` row each, so the gateway finds lead i by its number.
With the default base 9000000000 every number is a valid Indian mobile
(+919000000000, +919000000001, ...).

The gateway must be STOPPED while this runs (it holds the database open and caches
nothing about leads, but concurrent writers would contend). The owner must already
exist (create it through the admin API first, e.g. `loadgen route-setup`).

Rows are inserted with executemany in batches (default 50 000), one transaction per
batch, with `journal_mode=WAL` (the gateway's mode) and `synchronous=OFF`; the WAL is
checkpointed and truncated at the end, so the file size printed is the database's.

Usage: seed_leads.py DB_PATH --count 1000000 --owner-id <user uuid>
                     [--number-base 9000000000] [--batch 50000]

Python 3 standard library only.
"""

import argparse
import os
import sqlite3
import sys
import time
import uuid

# Largest national number that keeps the E.164 form "+91" + 10 digits.
NATIONAL_MAX = 9_999_999_999
# Indian mobile numbers start with 6, 7, 8 or 9.
NATIONAL_MIN = 6_000_000_000


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Insert N leads (and their lead_numbers rows) into a stopped "
        "utc-gateway SQLite database."
    )
    p.add_argument("db_path", metavar="DB_PATH", help="the gateway's SQLite file")
    p.add_argument("--count", type=int, required=True, help="leads to insert")
    p.add_argument(
        "--owner-id", required=True, help="id (uuid) of the existing user owning every lead"
    )
    p.add_argument(
        "--number-base",
        type=int,
        default=9_000_000_000,
        help="lead i gets +91<NUMBER_BASE + i> (default 9000000000)",
    )
    p.add_argument("--batch", type=int, default=50_000, help="rows per transaction (default 50000)")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be at least 1")
    if args.batch < 1:
        p.error("--batch must be at least 1")
    if args.number_base < NATIONAL_MIN or args.number_base + args.count - 1 > NATIONAL_MAX:
        p.error(
            f"numbers {args.number_base}..{args.number_base + args.count - 1} must stay within "
            f"{NATIONAL_MIN}..{NATIONAL_MAX} (10-digit Indian mobiles)"
        )
    try:
        owner = uuid.UUID(args.owner_id)
    except ValueError:
        p.error("--owner-id must be a uuid")
    # The gateway stores ids as lowercase hyphenated text.
    args.owner_id = str(owner)
    return args


def number(base, i):
    """The E.164 number of lead i."""
    return f"+91{base + i}"


def main(argv):
    args = parse_args(argv)
    if not os.path.exists(args.db_path):
        sys.exit(f"{args.db_path}: no such file (start the gateway once to create and migrate it)")
    # isolation_level=None: transactions are opened and committed explicitly below.
    db = sqlite3.connect(args.db_path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA busy_timeout=5000")
        # 256 MiB of page cache: the random uuid primary key and the lead_id index
        # are updated all over the tree.
        db.execute("PRAGMA cache_size=-262144")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"leads", "lead_numbers", "users"} <= tables:
            sys.exit(f"{args.db_path}: not a migrated utc-gateway database (no leads/lead_numbers/users)")
        owner = db.execute("SELECT active FROM users WHERE id = ?", (args.owner_id,)).fetchone()
        if owner is None:
            sys.exit(f"owner {args.owner_id} is not a user of this database")
        last = args.count - 1
        taken = db.execute(
            "SELECT number FROM lead_numbers WHERE number IN (?, ?) LIMIT 1",
            (number(args.number_base, 0), number(args.number_base, last)),
        ).fetchone()
        if taken is not None:
            sys.exit(f"{taken[0]} already belongs to a lead: this range was seeded before")
        before = db.execute("SELECT count(*) FROM leads").fetchone()[0]

        print(
            f"seeding {args.count} leads into {args.db_path} "
            f"(numbers {number(args.number_base, 0)}..{number(args.number_base, last)}, "
            f"owner {args.owner_id}, batches of {args.batch}; {before} leads before)",
            flush=True,
        )
        started = time.monotonic()
        # Distinct, increasing times (one ms apart) ending now, like leads created
        # one after the other.
        now_ms = int(time.time() * 1000)
        first_ms = now_ms - args.count
        done = 0
        while done < args.count:
            n = min(args.batch, args.count - done)
            leads = []
            numbers = []
            for i in range(done, done + n):
                lead_id = str(uuid.uuid4())
                phone = number(args.number_base, i)
                at = first_ms + i
                leads.append((lead_id, f"Bench {i}", phone, args.owner_id, at, at))
                numbers.append((phone, lead_id))
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO leads (id, first_name, phone, secondary_numbers, fields, owner_id, "
                "created_at, updated_at) VALUES (?, ?, ?, '[]', '{}', ?, ?, ?)",
                leads,
            )
            db.executemany("INSERT INTO lead_numbers (number, lead_id) VALUES (?, ?)", numbers)
            db.execute("COMMIT")
            done += n
            elapsed = time.monotonic() - started
            print(
                f"  {done:>9} / {args.count} leads  {elapsed:7.1f} s  "
                f"({done / elapsed if elapsed > 0 else 0:,.0f} leads/s)",
                flush=True,
            )
        inserted = time.monotonic() - started
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        total = time.monotonic() - started
        after = db.execute("SELECT count(*) FROM leads").fetchone()[0]
        numbers_rows = db.execute("SELECT count(*) FROM lead_numbers").fetchone()[0]
    finally:
        db.close()
    size = os.path.getsize(args.db_path)
    print(
        f"seeded {args.count} leads in {total:.1f} s (inserts {inserted:.1f} s, "
        f"checkpoint {total - inserted:.1f} s; {args.count / total:,.0f} leads/s); "
        f"leads now {after}, lead_numbers {numbers_rows}; "
        f"database file {size} bytes ({size / 2**20:.1f} MiB)",
        flush=True,
    )
    if after != before + args.count:
        sys.exit(f"expected {before + args.count} leads, found {after}")


if __name__ == "__main__":
    main(sys.argv[1:])
