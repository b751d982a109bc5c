"""jwtedge deploy-time tools: the ``jwtedge`` CLI, the JWKS bake and drift checks."""
