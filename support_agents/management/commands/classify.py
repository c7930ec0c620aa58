"""`python manage.py classify --input in.csv --output out.csv`: batch triage of a CSV's `text` column."""
from __future__ import annotations

import csv
import os
import time

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Classify the `text` column of a CSV with the router; writes queue,intent,confidence beside it."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--input", required=True)
        parser.add_argument("--output", required=True)
        parser.add_argument("--batch-size", type=int, default=128)
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        parser.add_argument("--processes", type=int, default=usable,
                            help="classifying processes, one thread each (default: one per usable core)")
        parser.add_argument("--model", default=None, help="router checkpoint dir (default: checkpoints/router)")
        parser.add_argument("--use-agent-thresholds", action="store_true",
                            help="apply the agents' configured confidence thresholds (needs the database)")

    def handle(self, *args, **opts) -> None:  # noqa: ANN002, ANN003
        from support_agents.router import classify_texts

        try:
            with open(opts["input"], newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                fields = list(reader.fieldnames or [])
                rows = list(reader)
        except OSError as e:
            raise CommandError(f"cannot read {opts['input']}: {e}") from e
        if "text" not in fields:
            raise CommandError(f"{opts['input']}: no `text` column (columns: {', '.join(fields) or 'none'})")
        if opts["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        if opts["processes"] < 1:
            raise CommandError("--processes must be at least 1")
        thresholds = None
        if opts["use_agent_thresholds"]:
            from support_agents.models import AgentProfile

            thresholds = dict(AgentProfile.objects.values_list("slug", "confidence_threshold"))
        from support_agents.inference import get_model, router_path

        get_model(opts["model"] or router_path())  # load once, outside the timing
        from django.db import connections

        connections.close_all()  # the classifying processes are forked: they must not share a socket
        t0 = time.perf_counter()
        results = classify_texts([r["text"] or "" for r in rows], thresholds=thresholds,
                                 batch_size=opts["batch_size"], path=opts["model"], processes=opts["processes"])
        dt = time.perf_counter() - t0
        out_fields = fields + [c for c in ("queue", "intent", "confidence") if c not in fields]
        with open(opts["output"], "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=out_fields)
            w.writeheader()
            for row, c in zip(rows, results, strict=True):
                w.writerow({**row, "queue": c.queue, "intent": c.intent, "confidence": f"{c.confidence:.4f}"})
        rate = len(rows) / dt if dt > 0 else float("inf")
        self.stdout.write(f"classified {len(rows)} rows in {dt:.2f}s ({rate:.0f}/s) -> {opts['output']}")
