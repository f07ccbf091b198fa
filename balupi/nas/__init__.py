"""Everything about the NAS: Wake-on-LAN, its power state machine, and the client that talks to it."""
