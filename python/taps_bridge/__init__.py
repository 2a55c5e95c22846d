"""The bridge between a taps driver (Rust) and a Python task engine (Dask, Ray, Parsl).

``python -m taps_bridge`` reads messages from the driver on stdin and answers on stdout; each
message is ``u32 LE json length, u32 LE blob count, u64 LE per blob, json, blobs``. The bridge
runs the engine's own client and submits every taps task as an engine task of
:func:`taps_bridge.frames.run_task` (on Ray :func:`taps_bridge.frames.ray_task`, whose arguments
and result are all ``bytes``), with the engine futures of its parents as arguments, so
parents' results move between the engine's workers. The driver gets each task's ``Done`` header
(its outcome, timings and size); a result's bytes go to the driver only when it asks (``fetch``),
or at once when they are small (at most ``inline`` bytes).
"""
