"""Local sandboxes for the demo and the test suite: launchers for OpenBao and
moto, and stateful fakes of the GitHub and Stripe APIs.

Nothing in `rotator run`'s path imports this package.
"""
