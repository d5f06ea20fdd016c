"""Two plugins that require each other: a manifest listing both is refused."""

from objectos.kernel.plugin import Plugin
from objectos.protocol.manifest import PluginManifest


class Alpha(Plugin):
    manifest = PluginManifest(
        id="com.test.alpha", version="1.0.0", dependencies={"com.test.beta": "^1"}
    )


class Beta(Plugin):
    manifest = PluginManifest(
        id="com.test.beta", version="1.0.0", dependencies={"com.test.alpha": "^1"}
    )


class NeedsNewerAlpha(Plugin):
    manifest = PluginManifest(
        id="com.test.gamma", version="1.0.0", dependencies={"com.test.alpha": "^2.0.0"}
    )
