"""The watch service (python main.py watch CONFIG.yaml): many cameras, one gallery, sightings that link across
cameras. Its foundations that need no models: the typed config file and the sightings database."""
