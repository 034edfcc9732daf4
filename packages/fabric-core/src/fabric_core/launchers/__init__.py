"""Launchers: how the processes of a multi-process strategy come to exist."""

from fabric_core.launchers.launcher import Launcher

__all__ = ["Launcher"]
