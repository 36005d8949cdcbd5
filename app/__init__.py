"""The Gradio workbench on top of run folders: `python -m app`. Views and wiring only; every
computation lives in `mdw` (mdw.runs.view, mdw.runs.view_distill, mdw.runs.audit, ...)."""
