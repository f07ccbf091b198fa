"""The hot cache: which content stays on the SSD (heat, eviction at admission) and what is fetched ahead."""
