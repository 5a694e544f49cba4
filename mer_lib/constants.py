"""Names and fixed facts shared by the whole pipeline."""

#: The 8 emotion ratings of the Soundtracks dataset, in the published logs' order.
EMOTIONS: tuple[str, ...] = (
    "valence", "energy", "tension", "anger", "fear", "happy", "sad", "tender",
)

#: The 7 mid-level perceptual features (Aljanaki & Soleymani 2018), in file order.
MIDLEVEL: tuple[str, ...] = (
    "melodiousness", "articulation", "rhythm_complexity", "rhythm_stability",
    "dissonance", "tonal_stability", "minorness",
)

#: Valid range of the raw (undivided) ratings.
EMOTION_RANGE: tuple[float, float] = (1.0, 9.0)
MIDLEVEL_RANGE: tuple[float, float] = (1.0, 10.0)

#: Targets are divided by this factor before training (protocol §2.1).
TARGET_SCALE: float = 10.0

#: Audio sample rate of the whole pipeline.
SAMPLE_RATE: int = 22050

#: Systems of the study, in the order of the paper's Figure 3.
SYSTEMS: tuple[str, ...] = ("A2E", "aA2E", "A2B2E", "aA2B2E", "A2M2E")

#: The reference training seeds.
PAPER_SEEDS: tuple[int, ...] = (6, 21, 42, 796, 950, 2025, 2324, 2451, 3100, 7192)
