"""A throwaway plugin distribution: one strategy, registered lazily."""
