"""The strategy, imported only when the name 'throwaway' is built."""

from fabric_core.strategies import SingleDeviceStrategy


class ThrowawayStrategy(SingleDeviceStrategy):
    """A single-device strategy that counts optimizer steps."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps = 0

    def optimizer_step(self, optimizer, **kwargs):
        self.steps += 1
        return super().optimizer_step(optimizer, **kwargs)
