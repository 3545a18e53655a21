"""RNG stream tags: every random decision of the synthetic world draws from
``np.random.default_rng([seed, TAG, ...])``, one stream per concern, so that a change in one
concern (say, the rasters) leaves every other one (layouts, drone cameras) as it was."""

TAG_CAMPUS = 1
TAG_FIELDS = 2
TAG_RASTER = 3
TAG_VIEWS = 4
TAG_IDS = 5
