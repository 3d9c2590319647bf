"""SMART App Launch 2.2 authorization server: discovery, authorize, token, PKCE, launch context,
scopes, refresh, introspection, revocation, backend services, patient accounts and MFA.

Built on authlib's OAuth 2.0 machinery; this package adds what SMART defines on top. It never
imports `adapters`: the gateway hands it a patient lookup callable.
"""
