"""Region-word correspondence heatmaps (METHOD §7).

compute.py  per-word Grad-CAM maps of (image, caption) pairs: `word_maps`, `WordMaps`, `CamOptions`
render.py   overlays, colour maps, labelled grids, PNGs
store.py    heatmaps/maps.npz + index.json in a run folder
stage.py    the `heatmaps` run stage and `compute_and_append` (for the distillation stage)
config.py   `HeatmapConfig`, `CamOptions` (no heavy imports: mdw.config may import it)
"""
