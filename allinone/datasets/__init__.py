"""Datasets made from many videos (``python main.py extract``): the dataset folder's lock, ids and records
(state.py), the per-video worker and its local process pool (worker.py), and the Ray engine (ray_engine.py)."""
