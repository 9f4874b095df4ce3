"""Speech → per-frame mouth parameters for the `audio_features` Triton stage.

Pure numpy/scipy/pocketsphinx logic, importable without Triton; `model.py` beside this
package is the thin Triton adapter.
"""
