//! The wifi service's plan and the generated files: pure and deterministic (snapshot-tested).
//!
//! - Client: `<system root>/etc/iohub/wpa_supplicant.conf` (0600), run as
//!   `wpa_supplicant -D nl80211,wext -i <dev> -c <conf>` (nl80211 first; the original forced the
//!   legacy `wext`). The SSID is written in wpa_supplicant's unquoted hex form (any bytes, no
//!   quoting rules), the key as the derived 64-hex-digit PSK ([`wpa_psk`], what
//!   `wpa_passphrase` writes): a quoted passphrase breaks in wpa_supplicant 2.10 when it holds a
//!   `"` followed by a `#` (the rest of the line is taken as a comment), and the clear
//!   passphrase then never sits in the file.
//! - AP (router mode only, validated by the config): `<system root>/etc/iohub/hostapd.conf`
//!   (0600) joining `br1`, run as `hostapd <conf>`. The SSID is `ssid2=<hex>` (plus
//!   `utf8_ssid=1` when it is not ASCII), the key as `wpa_psk=<64 hex>`. WPA2-PSK/CCMP, 802.11n on 2.4 GHz
//!   channel 6: the original's `channel=0` (ACS) fails on drivers without channel survey.
//!
//! The published plan carries the files with the passphrase as a `<VARIABLE>` placeholder; the
//! apply renders them again with the clear value from [`crate::secrets`]. The file of the other
//! mode is removed (it would keep a passphrase around).

use std::path::PathBuf;

use bus_schema::sections::WifiDevice;
use bus_schema::BusError;
use serde::Serialize;

use super::config::{Role, WifiDesired, DEVICE_VAR, SYS_CLASS_NET};
use crate::ctx::Paths;
use crate::shared::files::PlannedFile;

pub const WPA_SUPPLICANT: &str = "wpa_supplicant";
pub const HOSTAPD: &str = "hostapd";
/// The LAN bridge of router mode.
pub const BRIDGE: &str = "br1";

/// Where the wifi service's files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WifiLayout {
    pub wpa_supplicant_conf: PathBuf,
    pub hostapd_conf: PathBuf,
}

impl WifiLayout {
    pub fn new(paths: &Paths) -> WifiLayout {
        WifiLayout {
            wpa_supplicant_conf: paths.system("/etc/iohub/wpa_supplicant.conf"),
            hostapd_conf: paths.system("/etc/iohub/hostapd.conf"),
        }
    }
}

/// What the wifi service does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WifiPlan {
    pub role: Option<Role>,
    /// The interface used (resolved when `IOHUBOS_WIFI_DEVICE=auto`).
    pub device: Option<String>,
    /// `auto`: the wireless interfaces found, the first one is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected: Option<Vec<String>>,
    pub ssid: Option<String>,
    /// The config file, with the passphrase as a placeholder.
    pub file: Option<PlannedFile>,
    /// The variable whose clear value replaces the placeholder.
    pub secret_var: Option<String>,
    /// Files removed (the other mode's, or both when WiFi is off).
    pub remove: Vec<PathBuf>,
    /// The supervised program's command line; none when WiFi is off.
    pub run: Option<Vec<String>>,
}

/// The plan for `desired`. `detected` are the wireless interfaces present (for `auto`).
pub fn plan(
    desired: &WifiDesired,
    layout: &WifiLayout,
    detected: &[String],
) -> Result<WifiPlan, BusError> {
    let WifiDesired::On { role, device, ssid } = desired else {
        return Ok(WifiPlan {
            role: None,
            device: None,
            detected: None,
            ssid: None,
            file: None,
            secret_var: None,
            remove: vec![
                layout.wpa_supplicant_conf.clone(),
                layout.hostapd_conf.clone(),
            ],
            run: None,
        });
    };
    let (dev, detected) = match device {
        WifiDevice::Name(n) => (n.clone(), None),
        WifiDevice::Auto => match detected.first() {
            Some(first) => (first.clone(), Some(detected.to_vec())),
            None => {
                return Err(BusError::new(
                    bus_schema::ErrorCode::NotFound,
                    format!(
                        "no wireless interface found for `auto` (none of {SYS_CLASS_NET}/* has \
                         phy80211 or wireless); name the interface or plug the adapter in"
                    ),
                )
                .with_field(DEVICE_VAR))
            }
        },
    };
    let placeholder = format!("<PSK of {}>", role.pass_var());
    let (path, other, content, run) = match role {
        Role::Client => (
            &layout.wpa_supplicant_conf,
            &layout.hostapd_conf,
            wpa_supplicant_conf(ssid, &placeholder),
            vec![
                WPA_SUPPLICANT.to_string(),
                "-D".into(),
                "nl80211,wext".into(),
                "-i".into(),
                dev.clone(),
                "-c".into(),
                layout.wpa_supplicant_conf.display().to_string(),
            ],
        ),
        Role::Ap => (
            &layout.hostapd_conf,
            &layout.wpa_supplicant_conf,
            hostapd_conf(&dev, ssid, &placeholder),
            vec![
                HOSTAPD.to_string(),
                layout.hostapd_conf.display().to_string(),
            ],
        ),
    };
    Ok(WifiPlan {
        role: Some(*role),
        device: Some(dev),
        detected,
        ssid: Some(ssid.clone()),
        file: Some(PlannedFile::new(path.clone(), 0o600, content)),
        secret_var: Some(role.pass_var().to_string()),
        remove: vec![other.clone()],
        run: Some(run),
    })
}

impl WifiPlan {
    /// The config file's content with the clear passphrase.
    pub fn render(&self, pass: &str) -> Option<String> {
        let ssid = self.ssid.as_deref()?;
        let psk = wpa_psk(ssid, pass);
        Some(match self.role? {
            Role::Client => wpa_supplicant_conf(ssid, &psk),
            Role::Ap => hostapd_conf(self.device.as_deref()?, ssid, &psk),
        })
    }
}

fn hex(s: &str) -> String {
    hex::encode(s.as_bytes())
}

/// The WPA PSK of a passphrase on a network, as 64 hex digits (IEEE 802.11i: PBKDF2-HMAC-SHA1,
/// the SSID as salt, 4096 rounds, 32 bytes), what `wpa_passphrase` prints.
pub fn wpa_psk(ssid: &str, pass: &str) -> String {
    let mut psk = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(pass.as_bytes(), ssid.as_bytes(), 4096, &mut psk);
    hex::encode(psk)
}

/// A comment line naming the SSID for people reading the file (control characters are refused
/// by the config, so it cannot end the comment).
fn ssid_comment(ssid: &str) -> String {
    format!("# SSID: {ssid}\n")
}

/// `wpa_supplicant.conf` for a WPA/WPA2-PSK network; `psk` is 64 hex digits ([`wpa_psk`]).
pub fn wpa_supplicant_conf(ssid: &str, psk: &str) -> String {
    format!(
        "# Generated by iohubd (wifi service) from IOHUBOS_WIFI_CLIENT_SSID and \
         IOHUBOS_WIFI_CLIENT_PASS.\n\
         # Do not edit: it is rewritten on every change.\n\
         {comment}\
         network={{\n\
         \tssid={ssid_hex}\n\
         \tscan_ssid=1\n\
         \tkey_mgmt=WPA-PSK\n\
         \tproto=RSN WPA\n\
         \tpsk={psk}\n\
         }}\n",
        comment = ssid_comment(ssid),
        ssid_hex = hex(ssid),
    )
}

/// `hostapd.conf` for a WPA2-PSK access point bridged into br1; `psk` is 64 hex digits.
pub fn hostapd_conf(device: &str, ssid: &str, psk: &str) -> String {
    let utf8 = if ssid.is_ascii() { "" } else { "utf8_ssid=1\n" };
    format!(
        "# Generated by iohubd (wifi service) from IOHUBOS_WIFI_DEVICE, IOHUBOS_WIFI_AP_SSID and \
         IOHUBOS_WIFI_AP_PASS.\n\
         # Do not edit: it is rewritten on every change.\n\
         {comment}\
         interface={device}\n\
         bridge={BRIDGE}\n\
         driver=nl80211\n\
         ssid2={ssid_hex}\n\
         {utf8}\
         hw_mode=g\n\
         channel=6\n\
         ieee80211n=1\n\
         wmm_enabled=1\n\
         auth_algs=1\n\
         macaddr_acl=0\n\
         ignore_broadcast_ssid=0\n\
         wpa=2\n\
         wpa_key_mgmt=WPA-PSK\n\
         rsn_pairwise=CCMP\n\
         wpa_psk={psk}\n",
        comment = ssid_comment(ssid),
        ssid_hex = hex(ssid),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::shared::testenv::config_from_envvars;

    const ROUTER: &str = "IOHUBOS_NETWORK_MODE=router\nIOHUBOS_ETH0_DEVICE=eth0\n\
                          IOHUBOS_ETH1_DEVICE=eth1\nIOHUBOS_ETH1_IP=198.18.5.1\n\
                          IOHUBOS_ETH1_NETMASK=255.255.255.0\n";

    /// (plan, the file rendered with the clear passphrase from the same envvars).
    fn plan_of(envvars: &str, detected: &[&str]) -> (WifiPlan, Option<String>) {
        let c = config_from_envvars(envvars).unwrap();
        let desired = WifiDesired::from_section(&c.wifi).unwrap();
        let detected: Vec<String> = detected.iter().map(|s| s.to_string()).collect();
        let p = plan(
            &desired,
            &WifiLayout::new(&Paths::new("/iohub", "/")),
            &detected,
        )
        .unwrap();
        let pass = match p.role {
            Some(Role::Client) => c.wifi.client_pass.expose().to_string(),
            _ => c.wifi.ap_pass.expose().to_string(),
        };
        let rendered = p.render(&pass);
        (p, rendered)
    }

    #[test]
    fn the_psk_is_the_ieee_802_11i_derivation() {
        // IEEE 802.11i-2004 annex H.4.1.
        assert_eq!(
            wpa_psk("IEEE", "password"),
            "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
        );
    }

    #[test]
    fn the_wpa_supplicant_config_of_a_client() {
        let (p, file) = plan_of(
            "IOHUBOS_WIFI_MODE=client\nIOHUBOS_WIFI_DEVICE=wlan0\n\
             IOHUBOS_WIFI_CLIENT_SSID='Caf\u{e9} \"Wi-Fi\" #1'\n\
             IOHUBOS_WIFI_CLIENT_PASS='pa\"ss #word '\n",
            &[],
        );
        expect_test::expect![[r##"
            # Generated by iohubd (wifi service) from IOHUBOS_WIFI_CLIENT_SSID and IOHUBOS_WIFI_CLIENT_PASS.
            # Do not edit: it is rewritten on every change.
            # SSID: Café "Wi-Fi" #1
            network={
            	ssid=436166c3a9202257692d466922202331
            	scan_ssid=1
            	key_mgmt=WPA-PSK
            	proto=RSN WPA
            	psk=b8bc777015792953ab4eb77d1bf74f3733a624ca683e583e20def1eed9b1f52a
            }
        "##]]
        .assert_eq(&file.unwrap());
        let published = &p.file.as_ref().unwrap().content;
        assert!(
            published.contains("psk=<PSK of IOHUBOS_WIFI_CLIENT_PASS>"),
            "{published}"
        );
        assert!(!published.contains("pa\"ss"));
        assert_eq!(p.file.as_ref().unwrap().mode, "0600");
        expect_test::expect![[r#"
            [
                "wpa_supplicant",
                "-D",
                "nl80211,wext",
                "-i",
                "wlan0",
                "-c",
                "/etc/iohub/wpa_supplicant.conf",
            ]
        "#]]
        .assert_debug_eq(&p.run.unwrap());
        assert_eq!(p.remove, [PathBuf::from("/etc/iohub/hostapd.conf")]);
    }

    #[test]
    fn the_hostapd_config_of_an_access_point_on_an_auto_detected_device() {
        let (p, file) = plan_of(
            &format!(
                "{ROUTER}IOHUBOS_WIFI_MODE=ap\nIOHUBOS_WIFI_DEVICE=auto\n\
                 IOHUBOS_WIFI_AP_SSID='plant floor'\nIOHUBOS_WIFI_AP_PASS='correct horse battery'\n"
            ),
            &["wlan0", "wlan1"],
        );
        expect_test::expect![[r#"
            # Generated by iohubd (wifi service) from IOHUBOS_WIFI_DEVICE, IOHUBOS_WIFI_AP_SSID and IOHUBOS_WIFI_AP_PASS.
            # Do not edit: it is rewritten on every change.
            # SSID: plant floor
            interface=wlan0
            bridge=br1
            driver=nl80211
            ssid2=706c616e7420666c6f6f72
            hw_mode=g
            channel=6
            ieee80211n=1
            wmm_enabled=1
            auth_algs=1
            macaddr_acl=0
            ignore_broadcast_ssid=0
            wpa=2
            wpa_key_mgmt=WPA-PSK
            rsn_pairwise=CCMP
            wpa_psk=2635c5510e2db74b746f8ae1c4bb9791e3939a0120302b04b7cf9b6000b595d1
        "#]]
        .assert_eq(&file.unwrap());
        assert_eq!(
            p.detected,
            Some(vec!["wlan0".to_string(), "wlan1".to_string()])
        );
        assert_eq!(p.run.unwrap(), ["hostapd", "/etc/iohub/hostapd.conf"]);
        // A non-ASCII SSID is declared as UTF-8.
        let (_, file) = plan_of(
            &format!(
                "{ROUTER}IOHUBOS_WIFI_MODE=ap\nIOHUBOS_WIFI_DEVICE=wlan0\n\
                 IOHUBOS_WIFI_AP_SSID='Zoë'\nIOHUBOS_WIFI_AP_PASS=12345678\n"
            ),
            &[],
        );
        assert!(file.unwrap().contains("ssid2=5a6fc3ab\nutf8_ssid=1\n"));
    }

    #[test]
    fn auto_without_a_wireless_interface_is_an_error_and_off_removes_both_files() {
        let c = config_from_envvars(
            "IOHUBOS_WIFI_MODE=client\nIOHUBOS_WIFI_DEVICE=auto\n\
             IOHUBOS_WIFI_CLIENT_SSID=shop\nIOHUBOS_WIFI_CLIENT_PASS=12345678\n",
        )
        .unwrap();
        let desired = WifiDesired::from_section(&c.wifi).unwrap();
        let layout = WifiLayout::new(&Paths::new("/iohub", "/"));
        let e = plan(&desired, &layout, &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(DEVICE_VAR));
        let off = plan(&WifiDesired::Off, &layout, &[]).unwrap();
        assert_eq!(off.run, None);
        assert_eq!(off.remove.len(), 2);
    }
}
