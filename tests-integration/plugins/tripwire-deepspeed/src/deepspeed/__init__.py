"""Not deepspeed: a stand-in that stays in sys.modules once imported, so the tests can see that it was."""

TRIPWIRE = True
