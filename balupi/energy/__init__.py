"""Energy monitoring: Tapo plugs polled with python-kasa, the energy ledger, tariffs and savings."""
