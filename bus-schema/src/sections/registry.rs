//! The registry of every `IOHUBOS_*` variable (SPEC.md §1.2): its section, its default in the
//! original and its doc, plus the internal and pre-1.0 names.

use serde::Serialize;

use crate::topic::Section;

/// One `IOHUBOS_*` variable: where it belongs, its default in the original, and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VarSpec {
    pub name: &'static str,
    /// The config section the variable feeds.
    pub section: Section,
    /// The original's default. A `${...}` default is a shell expression, resolved against the
    /// other variables (see the module docs).
    pub default: &'static str,
    /// Whether the value is a secret (never published, never echoed in errors).
    pub secret: bool,
    pub doc: &'static str,
}

const fn var(
    name: &'static str,
    section: Section,
    default: &'static str,
    doc: &'static str,
) -> VarSpec {
    VarSpec {
        name,
        section,
        default,
        secret: false,
        doc,
    }
}

const fn secret(name: &'static str, section: Section, doc: &'static str) -> VarSpec {
    VarSpec {
        name,
        section,
        default: "",
        secret: true,
        doc,
    }
}

/// Every `IOHUBOS_*` variable of SPEC.md §1.2, plus the `bridge` section of iohub.
#[rustfmt::skip]
pub const VARIABLES: &[VarSpec] = &[
    // System / identity
    var("IOHUBOS_VERSION", Section::System, "1.1.3",
        "Firmware version, from the read-only version file. envvars.d files of a newer version are ignored."),
    var("IOHUBOS_DEVICE", Section::System, "",
        "Install disk written into sysvars by the installer (e.g. `/dev/sda`). Informational: the original ignores it."),
    var("IOHUBOS_HOSTNAME", Section::Network, "",
        "Host name, one RFC 1123 label. sysvars sets `iohub-<MAC of ETH0 without colons>`; empty leaves the host name alone. Also the registry host in image references `<hostname>:<port>/...`."),
    var("IOHUBOS_ETH0_DEVICE", Section::Network, "",
        "Interface name of the ETH0 uplink, fixed at install time (sysvars)."),
    // Services
    var("IOHUBOS_TIMEZONE", Section::System, "America/Los_Angeles",
        "tz database name (`Area/City`); empty leaves the timezone unchanged."),
    var("IOHUBOS_OPENSSH_ENABLED", Section::Ssh, "true",
        "Run sshd and accept tcp/22; TCP forwards of port 22 are refused."),
    var("IOHUBOS_SSH_PUBLIC_KEY", Section::Ssh, "",
        "authorized_keys line(s) for root, one per line."),
    var("IOHUBOS_UPGRADER_ENABLED", Section::Upgrader, "true",
        "Install signed firmware bundles dropped into `/iohub/firmware/` (`firmware.tgz`, `iohub-<V>-firmware.tgz`) into the other A/B slot; a refused one is moved to `/iohub/firmware/refused/` with the reason. `iohub/cmd/firmware/install` works either way."),
    var("IOHUBOS_UPGRADER_REBOOT", Section::Upgrader, "true",
        "Reboot into the new slot (one trial boot) as soon as a dropped bundle is installed, as the original does; false: the trial waits for `iohubctl firmware reboot` or a reboot."),
    var("IOHUBOS_UPGRADER_HEALTH_SECS", Section::Upgrader, "300",
        "Trial boot: the new slot is committed once every service of iohubd is applied or disabled within this many seconds (30-86400); otherwise the box returns to the last good slot by itself."),
    var("IOHUBOS_UPGRADER_URL", Section::Upgrader, "",
        "`https://` URL of the signed release manifest (`iohubctl firmware publish`) polled for a newer bundle; empty: no polling. The box takes a bundle only when its rollout share (`rollout_bp`, basis points) covers this box, downloads it resumably into `/iohub/runtime/firmware/download/` and installs it like a drop."),
    var("IOHUBOS_UPGRADER_CA", Section::Upgrader, "",
        "Pinned CA bundle (PEM) of the HTTPS source, absolute or relative to `/iohub`; when set, no other CA is trusted. Empty: the system's CA bundle."),
    var("IOHUBOS_UPGRADER_CERT", Section::Upgrader, "",
        "Client certificate (PEM) presented to the HTTPS source, absolute or relative to `/iohub`; set with `IOHUBOS_UPGRADER_KEY`."),
    var("IOHUBOS_UPGRADER_KEY", Section::Upgrader, "",
        "Private key (PEM) of `IOHUBOS_UPGRADER_CERT`."),
    var("IOHUBOS_UPGRADER_POLL_SECS", Section::Upgrader, "3600",
        "Seconds between polls of `IOHUBOS_UPGRADER_URL` (10-604800); the first poll is at start."),
    var("IOHUBOS_UPGRADER_WINDOW", Section::Upgrader, "",
        "Maintenance window `HH:MM-HH:MM` in the box's time zone (`23:00-01:00` spans midnight): an armed trial reboots only inside it. Empty: at once."),
    var("IOHUBOS_UPGRADER_REQUIRE_BRIDGE", Section::Upgrader, "false",
        "A trial boot commits only once the bridge's remote is connected too (needs `IOHUBOS_BRIDGE_ENABLED=true`); otherwise it rolls back at the health deadline."),
    var("IOHUBOS_DEPLOYER_ENABLED", Section::Deployer, "true",
        "Install app zips dropped into `/iohub/deploy/`."),
    var("IOHUBOS_DOCKER_ENABLED", Section::Docker, "true",
        "Master switch for Docker: engine, registry, apps. Was `IOHUBOS_ENGINE_ENABLED` before 1.0.0."),
    // Network
    var("IOHUBOS_NETWORK_CONFIG", Section::Network, "true",
        "Manage ETH0, br1 and WiFi. false: interfaces are left alone (firewall, DHCP server and routes still run)."),
    var("IOHUBOS_NETWORK_MODE", Section::Network, "standalone",
        "`standalone` or `router`. Router mode bridges ETH1 (and the WiFi AP) into br1, runs the optional DHCP server there and masquerades towards it."),
    var("IOHUBOS_ETH0_MODE", Section::Network, "dhcp",
        "`dhcp` or `static`. As in the original, an empty value means static."),
    var("IOHUBOS_ETH0_IP", Section::Network, "",
        "Static ETH0 address (required in static mode)."),
    var("IOHUBOS_ETH0_NETMASK", Section::Network, "",
        "Static ETH0 netmask, dotted (`255.255.255.0`) or a prefix length (required in static mode)."),
    var("IOHUBOS_ETH0_GATEWAY", Section::Network, "",
        "Static default gateway, inside the ETH0 network (optional)."),
    var("IOHUBOS_ETH0_DNS", Section::Network, "",
        "Static DNS servers, separated by spaces or commas."),
    var("IOHUBOS_ETH1_DEVICE", Section::Network, "",
        "Router mode: interface bridged into br1 (required in router mode)."),
    var("IOHUBOS_ETH1_IP", Section::Network, "",
        "Router mode: address of br1, also the router handed out by the DHCP server (required in router mode)."),
    var("IOHUBOS_ETH1_NETMASK", Section::Network, "",
        "Router mode: netmask of br1, dotted or a prefix length (required in router mode)."),
    var("IOHUBOS_WIFI_MODE", Section::Wifi, "",
        "Empty or `off`; `client` (WiFi is the uplink instead of ETH0); `ap` (access point bridged into br1, router mode only)."),
    var("IOHUBOS_WIFI_DEVICE", Section::Wifi, "",
        "WiFi interface name, or `auto` for the first wireless interface. Required when WiFi is used."),
    var("IOHUBOS_WIFI_CLIENT_SSID", Section::Wifi, "",
        "Client mode: SSID (1-32 bytes) of the WPA/WPA2-PSK network."),
    secret("IOHUBOS_WIFI_CLIENT_PASS", Section::Wifi,
        "Client mode: WPA passphrase, 8-63 printable ASCII characters."),
    var("IOHUBOS_WIFI_AP_SSID", Section::Wifi, "",
        "AP mode: SSID (1-32 bytes) of the access point."),
    secret("IOHUBOS_WIFI_AP_PASS", Section::Wifi,
        "AP mode: WPA2 passphrase, 8-63 printable ASCII characters."),
    // DHCP server
    var("IOHUBOS_DHCP_SERVER_ENABLED", Section::Dhcp, "false",
        "DHCP server on br1; takes effect in router mode only."),
    var("IOHUBOS_DHCP_SERVER_FROM", Section::Dhcp, "",
        "First address of the dynamic range, inside the ETH1 network (required when the server runs)."),
    var("IOHUBOS_DHCP_SERVER_TO", Section::Dhcp, "",
        "Last address of the dynamic range, not below FROM (required when the server runs)."),
    var("IOHUBOS_DHCP_SERVER_DNS", Section::Dhcp, "",
        "DNS servers handed to clients, separated by commas or spaces; none when empty."),
    // Firewall
    var("IOHUBOS_FIREWALL_CONFIG", Section::Firewall, "true",
        "Manage the firewall and the routes of `/iohub/routes`. false: neither is touched."),
    var("IOHUBOS_FIREWALL_ROUTER_TO_INTERNET", Section::Firewall, "false",
        "Let devices on br1 reach the uplink, the internet and anything routed."),
    // Docker registry
    var("IOHUBOS_DOCKER_REGISTRY_ENABLED", Section::Registry, "true",
        "Run the local registry and import image archives."),
    var("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0", Section::Registry, "false",
        "Accept the registry port from the uplink."),
    var("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH1", Section::Registry, "false",
        "Router mode: accept the registry port from br1."),
    var("IOHUBOS_DOCKER_REGISTRY_RESCAN", Section::Registry, "true",
        "Import `docker save` archives dropped into `/iohub/runtime/iohub-registry/`."),
    var("IOHUBOS_DOCKER_REGISTRY_RESCAN_DELETE", Section::Registry, "true",
        "Delete each archive after importing it."),
    var("IOHUBOS_DOCKER_REGISTRY_PORT", Section::Registry, "5000",
        "Host TCP port of the registry (empty means 5000); also in image references `<hostname>:<port>/...`."),
    // Admin API
    var("IOHUBOS_ADMIN_API_ENABLED", Section::AdminApi, "false",
        "Serve the admin HTTP API; TCP forwards of its port are refused."),
    var("IOHUBOS_ADMIN_API_SERVER_PORT", Section::AdminApi, "9999",
        "TCP port of the admin API (empty means 9999)."),
    secret("IOHUBOS_ADMIN_API_AUTH_TOKEN", Section::AdminApi,
        "Expected `X-API-Token` header. Must have at least 32 characters with a lowercase letter, an uppercase letter, a digit and a symbol; with a weak or empty token the API runs but answers 403 to every request."),
    var("IOHUBOS_ADMIN_API_COMPOSE_POLICY", Section::AdminApi, "any",
        "What a compose deployed through the admin API may ask of the host. `any` (the original's behaviour): anything, so the API token is root-equivalent. `restricted`: a deploy is refused (400, naming each offending key) when a service has `privileged` (not false), `network_mode`, `pid`, `ipc`, `uts`, `userns_mode` or `cgroup` `host`, `cap_add`, `devices`, `device_cgroup_rules`, an unconfining `security_opt`, `volumes_from` another container, an `extends` from another file, or a bind mount (service volume, local volume `device`, config or secret `file`) of a host path outside `/iohub/docker/apps/<app>` and the global volume `/iohub/docker/global/volumes/global-vol`; a top-level `include` is refused too."),
    // IOhub compatibility (global MQTT broker)
    var("IOHUBOS_GLOBAL_MQTT", Section::GlobalMqtt, "true",
        "Run the IOhub-compatible global broker for apps."),
    var("IOHUBOS_GLOBAL_MQTT_IMG", Section::GlobalMqtt,
        "${IOHUBOS_HOSTNAME}:${IOHUBOS_DOCKER_REGISTRY_PORT}/iohubos/iohubos-mqtt",
        "Image of the original broker container, kept for compatibility (installs up to 1.1.1 carry a literal `:5000`)."),
    var("IOHUBOS_GLOBAL_MQTT_NAME", Section::GlobalMqtt, "ezvpn-global-mqtt",
        "Host name apps use to reach the broker (`<name>:1883`)."),
    var("IOHUBOS_GLOBAL_MQTT_NET", Section::GlobalMqtt, "ezvpn-global-mqtt-net",
        "Docker network apps join to reach the broker."),
    var("IOHUBOS_GLOBAL_MQTT_ANONYMOUS", Section::GlobalMqtt, "true",
        "Accept apps without a login (the original's `allow_anonymous true`). false: only IOHUBOS_GLOBAL_MQTT_USERNAME/_PASSWORD."),
    var("IOHUBOS_GLOBAL_MQTT_USERNAME", Section::GlobalMqtt, "",
        "The one login apps may use (with IOHUBOS_GLOBAL_MQTT_PASSWORD; both or neither)."),
    secret("IOHUBOS_GLOBAL_MQTT_PASSWORD", Section::GlobalMqtt,
        "Password of IOHUBOS_GLOBAL_MQTT_USERNAME."),
    var("IOHUBOS_GLOBAL_MQTT_MIRROR", Section::GlobalMqtt, "",
        "Comma-separated control-plane filters apps may read (e.g. `iohub/state/#`), under iohub/state, plan, config or event only; commands, replies and secrets never. Empty: apps see nothing of the control plane."),
    var("IOHUBOS_GLOBAL_MQTT_MAX_QUEUED", Section::GlobalMqtt, "1000",
        "Messages queued per app subscription before a publisher is held back, then QoS0 dropped and counted, and kept per absent persistent session (mosquitto's `max_queued_messages`), 1-1000000."),
    var("IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT", Section::GlobalMqtt, "",
        "MQTT over WebSocket (browsers) on this TCP port of the box, same rules as 1883. Empty: off."),
    // WireGuard
    var("IOHUBOS_WIREGUARD_ENABLED", Section::Wireguard, "${IOHUBOS_VPN_ENABLED:-false}",
        "Run the WireGuard client."),
    var("IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY", Section::Wireguard,
        "${IOHUBOS_VPN_SERVER_PUBLIC_KEY:-}",
        "Public key of the server peer (base64, 44 characters)."),
    var("IOHUBOS_WIREGUARD_BOX_NUMBER", Section::Wireguard, "${IOHUBOS_VPN_BOX_NUMBER:-}",
        "Host number of this box in the VPN network, unique, greater than 1 (1 is the server), inside the network."),
    var("IOHUBOS_WIREGUARD_NETWORK", Section::Wireguard, "${IOHUBOS_VPN_NETWORK:-}",
        "VPN network in CIDR notation, e.g. `100.90.56.0/24`."),
    var("IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS", Section::Wireguard,
        "${IOHUBOS_VPN_SERVER_IP_ADDRESS:-}",
        "Server endpoint host: IPv4 address or DNS name."),
    var("IOHUBOS_WIREGUARD_SERVER_IP_PORT", Section::Wireguard,
        "${IOHUBOS_VPN_SERVER_IP_PORT:-}",
        "Server endpoint UDP port, e.g. 51820."),
    var("IOHUBOS_WIREGUARD_EXPOSE", Section::Wireguard, "${IOHUBOS_VPN_EXPOSE:-auto}",
        "AllowedIPs of the server peer: `auto` (the VPN network) or comma-separated CIDRs."),
    var("IOHUBOS_WIREGUARD_ACCESS_HOST", Section::Wireguard, "${IOHUBOS_VPN_ACCESS_HOST:-false}",
        "Let VPN peers reach the services of the box itself."),
    var("IOHUBOS_VPN_ENABLED", Section::Wireguard, "false",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_ENABLED."),
    var("IOHUBOS_VPN_SERVER_PUBLIC_KEY", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY."),
    var("IOHUBOS_VPN_BOX_NUMBER", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_BOX_NUMBER."),
    var("IOHUBOS_VPN_NETWORK", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_NETWORK."),
    var("IOHUBOS_VPN_SERVER_IP_ADDRESS", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS."),
    var("IOHUBOS_VPN_SERVER_IP_PORT", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_SERVER_IP_PORT."),
    var("IOHUBOS_VPN_EXPOSE", Section::Wireguard, "auto",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_EXPOSE."),
    var("IOHUBOS_VPN_ACCESS_HOST", Section::Wireguard, "false",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_ACCESS_HOST."),
    // ZeroTier
    var("IOHUBOS_ZEROTIER_ENABLED", Section::Zerotier, "false",
        "Join a ZeroTier network."),
    var("IOHUBOS_ZEROTIER_NETWORK", Section::Zerotier, "",
        "ZeroTier network id, 16 hex digits (required when enabled)."),
    var("IOHUBOS_ZEROTIER_ACCESS_HOST", Section::Zerotier, "false",
        "Let ZeroTier peers reach the services of the box itself."),
    // Bridge (iohub)
    var("IOHUBOS_BRIDGE_ENABLED", Section::Bridge, "false",
        "iohub: forward local topics to a remote MQTT broker, with a disk-backed queue while it is unreachable."),
    var("IOHUBOS_BRIDGE_URL", Section::Bridge, "",
        "iohub: remote broker, `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (8883); required when enabled."),
    var("IOHUBOS_BRIDGE_USERNAME", Section::Bridge, "",
        "iohub: user name on the remote broker (optional)."),
    secret("IOHUBOS_BRIDGE_PASSWORD", Section::Bridge,
        "iohub: password on the remote broker (optional)."),
    var("IOHUBOS_BRIDGE_TOPICS", Section::Bridge, "iohub/state/#",
        "iohub: comma-separated MQTT topic filters to forward."),
    var("IOHUBOS_BRIDGE_QUEUE_MIB", Section::Bridge, "64",
        "iohub: disk budget of the store-and-forward queue in MiB (empty means 64)."),
    var("IOHUBOS_BRIDGE_FLEET_PREFIX", Section::Bridge, "",
        "iohub: fleet topics on the remote broker, e.g. `fleet`: the box's state is mirrored retained under `<prefix>/<box id>/state/<service>`, and commands on `<prefix>/<box id>/cmd/<service>/<verb>` and `<prefix>/all/cmd/<service>/<verb>` (a request `{\"id\", \"body\"}`) are run when allowed, their reply published on `<prefix>/<box id>/reply/<id>`. Empty: no fleet topics."),
    var("IOHUBOS_BRIDGE_BOX_ID", Section::Bridge, "",
        "iohub: the box's name in the fleet topics (one topic level, not `all`); empty means the host name."),
    var("IOHUBOS_BRIDGE_FLEET_COMMANDS", Section::Bridge, "status,get",
        "iohub: the commands the fleet may run, comma-separated: `<verb>` (any service) or `<service>/<verb>`, e.g. `status,get,config/set,apps/restart`."),
];

/// Names the original uses only inside its scripts (SPEC.md §1.2 "Internal"): setting them has
/// no effect, so the config service can say so instead of calling them unknown.
pub const INTERNAL_VARIABLES: &[&str] = &[
    "IOHUBOS_INBOUND_DEVICE",
    "IOHUBOS_ETH1_NETWORK",
    "IOHUBOS_FIREWALL_PORT_FORWARDS_TCP",
    "IOHUBOS_FIREWALL_PORT_FORWARDS_UDP",
    "IOHUBOS_ROUTES",
];

/// The registry entry of a variable.
pub fn spec(name: &str) -> Option<&'static VarSpec> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// The current name of a pre-1.0 variable (`IOHUBOS_ENGINE_ENABLED` -> `IOHUBOS_DOCKER_ENABLED`,
/// `IOHUBOS_ENGINE_REGISTRY_*` -> `IOHUBOS_DOCKER_REGISTRY_*`, SPEC.md §1.3).
pub fn renamed_to(old: &str) -> Option<&'static str> {
    let rest = old.strip_prefix("IOHUBOS_ENGINE_")?;
    spec(&format!("IOHUBOS_DOCKER_{rest}")).map(|s| s.name)
}

/// The pre-1.0 name of a current variable, if it had one.
pub(super) fn old_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("IOHUBOS_DOCKER_")?;
    (rest == "ENABLED" || rest.starts_with("REGISTRY_")).then(|| format!("IOHUBOS_ENGINE_{rest}"))
}
