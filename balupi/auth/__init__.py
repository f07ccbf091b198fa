"""Who is asking: NAS-backed logins that keep working while the NAS sleeps, and API tokens.

- `service`: the `Authenticator`, the one place a user name and password are judged (by the NAS
  when it is awake, else by a stored verifier), and what an accepted login is (`Identity`).
- `verifiers`: salted scrypt verifiers of passwords the NAS accepted (table `auth_verifiers`).
- `throttle`: growing delays after failed logins, per client address and per user name.
- `tokens`: the API's JWTs and their signing key.
- `basic`: parsing `Authorization` headers.
- `schema`: the `auth` migrations.
"""
