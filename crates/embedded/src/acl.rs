//! ACL checks and fix-ups exactly as ZooKeeper's `PrepRequestProcessor` does them.

use std::net::IpAddr;

use medkeeper_coord::{Acl, Error, Id, Perms};

/// Checks that one of `ids` holds `perm` (any of its bits) under `acl`. An empty ACL allows
/// everything, as on ZooKeeper.
pub(crate) fn check(acl: &[Acl], perm: Perms, ids: &[Id]) -> Result<(), Error> {
    if acl.is_empty() || ids.iter().any(|i| i.scheme == "super") {
        return Ok(());
    }
    for a in acl {
        if !a.perms.intersects(perm) {
            continue;
        }
        if a.id.scheme == "world" && a.id.id == "anyone" {
            return Ok(());
        }
        for id in ids.iter().filter(|i| i.scheme == a.id.scheme) {
            let ok = match a.id.scheme.as_str() {
                "ip" => ip_matches(&id.id, &a.id.id),
                _ => id.id == a.id.id,
            };
            if ok {
                return Ok(());
            }
        }
    }
    Err(Error::NoAuth)
}

/// Validates an ACL and expands the `auth` scheme into the session's authenticated identities
/// (ZooKeeper's `fixupACL`); duplicates are removed.
pub(crate) fn fixup(acl: &[Acl], ids: &[Id]) -> Result<Vec<Acl>, Error> {
    if acl.is_empty() {
        return Err(Error::InvalidAcl);
    }
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    let mut push = |a: Acl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for a in acl {
        match a.id.scheme.as_str() {
            "world" if a.id.id == "anyone" => push(a.clone()),
            "auth" => {
                let mut any = false;
                for id in ids.iter().filter(|i| i.scheme != "ip") {
                    push(Acl::new(a.perms, id.clone()));
                    any = true;
                }
                if !any {
                    return Err(Error::InvalidAcl);
                }
            }
            "digest" if a.id.id.split(':').count() == 2 => push(a.clone()),
            "ip" if parse_ip_acl(&a.id.id).is_some() => push(a.clone()),
            _ => return Err(Error::InvalidAcl),
        }
    }
    Ok(out)
}

/// The identity `add_auth` adds, or `AuthFailed` for a scheme other than `digest`.
pub(crate) fn authenticate(scheme: &str, auth: &[u8]) -> Result<Id, Error> {
    match scheme {
        "digest" => {
            let text = std::str::from_utf8(auth).map_err(|_| Error::AuthFailed)?;
            Ok(Id::new(
                "digest",
                medkeeper_coord::digest_of_credentials(text),
            ))
        }
        _ => Err(Error::AuthFailed),
    }
}

fn parse_ip_acl(s: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u32>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

fn ip_matches(client: &str, acl: &str) -> bool {
    let (Some((net, bits)), Ok(ip)) = (parse_ip_acl(acl), client.parse::<IpAddr>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges() {
        assert!(ip_matches("10.1.2.3", "10.0.0.0/8"));
        assert!(!ip_matches("11.1.2.3", "10.0.0.0/8"));
        assert!(ip_matches("127.0.0.1", "127.0.0.1"));
        assert!(!ip_matches("127.0.0.2", "127.0.0.1"));
    }

    #[test]
    fn fixup_rules() {
        let digest = Id::new("digest", "u:x");
        assert_eq!(fixup(&[], &[]), Err(Error::InvalidAcl));
        assert_eq!(
            fixup(&Acl::creator_all(), &[Id::new("ip", "127.0.0.1")]),
            Err(Error::InvalidAcl)
        );
        assert_eq!(
            fixup(&Acl::creator_all(), std::slice::from_ref(&digest)).unwrap(),
            vec![Acl::new(Perms::ALL, digest)]
        );
        assert_eq!(
            fixup(&[Acl::new(Perms::ALL, Id::new("world", "me"))], &[]),
            Err(Error::InvalidAcl)
        );
        assert_eq!(
            fixup(&[Acl::new(Perms::ALL, Id::new("nope", "x"))], &[]),
            Err(Error::InvalidAcl)
        );
        assert_eq!(
            fixup(&[Acl::new(Perms::ALL, Id::new("ip", "300.1.1.1"))], &[]),
            Err(Error::InvalidAcl)
        );
    }

    #[test]
    fn checks() {
        let acl = vec![Acl::digest(Perms::READ, "u", "p")];
        assert_eq!(check(&acl, Perms::READ, &[]), Err(Error::NoAuth));
        let me = authenticate("digest", b"u:p").unwrap();
        assert_eq!(check(&acl, Perms::READ, std::slice::from_ref(&me)), Ok(()));
        assert_eq!(check(&acl, Perms::WRITE, &[me]), Err(Error::NoAuth));
        assert_eq!(authenticate("nosuch", b"u:p"), Err(Error::AuthFailed));
        assert!(
            authenticate("digest", b"nocolon")
                .unwrap()
                .id
                .starts_with("nocolon:")
        );
    }
}
