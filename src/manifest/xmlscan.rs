//! A light scan of libvirt domain XML: enough to check it against its manifest (the domain's
//! name, the devices its disks use, its MAC addresses), not an XML parser. Comments are
//! skipped; anything the scan does not understand is passed over, never an error, so a
//! domain libvirt accepts is never refused here for its syntax.

/// An attribute of an element: `<source dev='/dev/drbd0'/>` gives element `source`,
/// name `dev`, value `/dev/drbd0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr<'x> {
    pub element: &'x str,
    pub name: &'x str,
    pub value: &'x str,
    /// 1-based line of the value in the XML.
    pub line: usize,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan<'x> {
    /// The text of the first `<name>` element (the domain's name), trimmed, and its line.
    pub name: Option<(&'x str, usize)>,
    pub attrs: Vec<Attr<'x>>,
}

/// A DRBD device path as a domain names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrbdDevice<'x> {
    /// `/dev/drbdN`.
    Minor(u32),
    /// `/dev/drbd/by-res/RESOURCE[/VOLUME]`.
    Resource(&'x str),
}

/// Read `/dev/drbd0` or `/dev/drbd/by-res/files/0`; `None` for anything else.
pub fn drbd_device(path: &str) -> Option<DrbdDevice<'_>> {
    let rest = path.strip_prefix("/dev/drbd")?;
    if let Some(res) = rest.strip_prefix("/by-res/") {
        let name = res.split('/').next().unwrap_or_default();
        return (!name.is_empty()).then_some(DrbdDevice::Resource(name));
    }
    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u32 holds is no minor DRBD can have; u32::MAX is out of range too.
        return Some(DrbdDevice::Minor(rest.parse().unwrap_or(u32::MAX)));
    }
    None
}

pub fn scan(xml: &str) -> Scan<'_> {
    let mut out = Scan::default();
    // Lines counted as the scan moves forward, so a large file costs one pass.
    let (mut counted, mut line) = (0, 1);
    let mut line_at = |i: usize| {
        if i < counted {
            (counted, line) = (0, 1);
        }
        line += xml.as_bytes()[counted..i]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        counted = i;
        line
    };
    let mut i = 0;
    while let Some(off) = xml[i..].find('<') {
        let start = i + off + 1;
        let rest = &xml[start..];
        // Comments, processing instructions, CDATA and declarations: skip to their end.
        let skip_to = if rest.starts_with("!--") {
            Some("-->")
        } else if rest.starts_with("![CDATA[") {
            Some("]]>")
        } else if rest.starts_with('!') || rest.starts_with('?') || rest.starts_with('/') {
            Some(">")
        } else {
            None
        };
        if let Some(end) = skip_to {
            match rest.find(end) {
                Some(e) => {
                    i = start + e + end.len();
                    continue;
                }
                None => break,
            }
        }
        // The element's name.
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
            .unwrap_or(rest.len());
        let element = &rest[..name_len];
        let mut j = start + name_len;
        // Its attributes, up to the end of the tag.
        loop {
            let tail = &xml[j..];
            let trimmed = tail.trim_start();
            j += tail.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('>') || trimmed.starts_with('/') {
                break;
            }
            let Some(eq) = trimmed.find('=') else { break };
            let attr = trimmed[..eq].trim();
            if attr.contains(['<', '>']) {
                break;
            }
            let after = trimmed[eq + 1..].trim_start();
            let value_start = j + (trimmed.len() - after.len());
            let Some(quote) = after.chars().next().filter(|c| *c == '\'' || *c == '"') else {
                break;
            };
            let Some(len) = after[1..].find(quote) else {
                break;
            };
            let value = &after[1..1 + len];
            out.attrs.push(Attr {
                element,
                name: attr,
                value,
                line: line_at(value_start),
            });
            j = value_start + 1 + len + 1;
        }
        if element == "name" && out.name.is_none() {
            if let Some(gt) = xml[j..].find('>') {
                let text_start = j + gt + 1;
                let text = &xml[text_start..];
                let end = text.find('<').unwrap_or(text.len());
                let value = text[..end].trim();
                let lead = text[..end].len() - text[..end].trim_start().len();
                out.name = Some((value, line_at(text_start + lead)));
            }
        }
        i = j.max(start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<!-- <name>not-this</name> /dev/drbd9 -->
<domain type='kvm'>
  <name> files </name>
  <devices>
    <disk type=\"block\" device='disk'>
      <source dev='/dev/drbd0'/>
    </disk>
    <interface type='bridge'><mac address='52:54:00:0a:00:20'/></interface>
  </devices>
</domain>";

    #[test]
    fn finds_name_sources_and_macs_outside_comments() {
        let s = scan(XML);
        assert_eq!(s.name, Some(("files", 3)));
        let find = |el: &str, at: &str| {
            s.attrs
                .iter()
                .find(|a| a.element == el && a.name == at)
                .map(|a| (a.value, a.line))
        };
        assert_eq!(find("source", "dev"), Some(("/dev/drbd0", 6)));
        assert_eq!(find("mac", "address"), Some(("52:54:00:0a:00:20", 8)));
        assert_eq!(find("disk", "type"), Some(("block", 5)));
        assert!(!s.attrs.iter().any(|a| a.value.contains("drbd9")));
    }

    #[test]
    fn drbd_devices() {
        assert_eq!(drbd_device("/dev/drbd12"), Some(DrbdDevice::Minor(12)));
        assert_eq!(
            drbd_device("/dev/drbd/by-res/files/0"),
            Some(DrbdDevice::Resource("files"))
        );
        assert_eq!(drbd_device("/dev/drbd"), None);
        assert_eq!(drbd_device("/dev/drbd1p1"), None);
        assert_eq!(drbd_device("/dev/vg0/files"), None);
        assert_eq!(
            drbd_device("/dev/drbd99999999999"),
            Some(DrbdDevice::Minor(u32::MAX))
        );
    }

    #[test]
    fn never_panics_on_broken_xml() {
        for xml in [
            "",
            "<",
            "<name",
            "<name>",
            "<a b",
            "<a b=",
            "<a b='",
            "<a b='x",
            "<!--",
            "<a b=x>",
            "<é ü='ö'>",
            "<name>é",
            "<<<>>>",
            "<a\u{a0}b='c'>",
            "<a b = 'c' d=\"e\"/>",
        ] {
            let _ = scan(xml);
        }
        assert_eq!(scan("<a b = 'c' d=\"e\"/>").attrs.len(), 2);
    }
}
