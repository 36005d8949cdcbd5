"""python -m app [--host 127.0.0.1] [--port 7860] [--auth user:pass] [--runs DIR] [--no-demo] [--demo-config JSON]"""
from __future__ import annotations

import argparse
import os
import sys
import threading

# Before gradio is imported: no analytics, no hub calls.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m app", description="The MDW Workbench (Gradio).")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--auth", default=None, help="user:pass required to open the app")
    ap.add_argument("--runs", default=os.environ.get("MDW_RUNS", "runs"), help="runs folder (default ./runs or $MDW_RUNS)")
    ap.add_argument("--no-demo", action="store_true", help="do not start the demo run when there are no runs")
    ap.add_argument("--demo-config", default="", help="run config of the demo run (default assets/configs/demo.json)")
    ap.add_argument("--max-running", type=int, default=1, help="runs at once; the others queue")
    return ap.parse_args(argv)


def parse_auth(text):
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth: expected user:pass")
    return (user, password)


def poll_forever(ctx, stop: threading.Event, every: float = 2.0) -> None:
    """Launch queued runs and reap finished ones even while no page is open."""
    while not stop.wait(every):
        try:
            ctx.manager.poll()
        except Exception as e:  # noqa: BLE001 - keep polling; the run folder holds the error
            print(f"app: polling runs failed: {e}", file=sys.stderr)


def start_demo_if_empty(ctx) -> str | None:
    """Start the built-in demo run when the runs folder has no runs; its id, or None."""
    from .tab_runs import demo_config
    if ctx.store.list_runs():
        return None
    return ctx.manager.create_and_start(demo_config(ctx.demo_config), name="demo-scenes")


def main(argv=None) -> None:
    args = parse_args(argv)
    auth = parse_auth(args.auth)
    from .build import CSS, build_app
    from .context import AppContext

    ctx = AppContext(args.runs, max_running=args.max_running, demo_config=args.demo_config)
    run_id = None if args.no_demo else start_demo_if_empty(ctx)
    if run_id:
        print(f"app: no runs yet in {ctx.runs_dir}; started the demo run {run_id}")
    stop = threading.Event()
    threading.Thread(target=poll_forever, args=(ctx, stop), daemon=True).start()
    demo = build_app(ctx)
    try:
        demo.launch(server_name=args.host, server_port=args.port, auth=auth, share=False,
                    allowed_paths=[ctx.runs_dir], css=CSS, footer_links=["api"], show_error=True)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
