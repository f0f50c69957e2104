"""Attack suite: one test per attack case, each naming its fault class (OWASP ASVS 4.0.3, CWE)."""
