"""The API protocol: envelope, errors, discovery (pure; mounted by deployments/)."""
