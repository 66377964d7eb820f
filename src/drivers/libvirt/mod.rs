//! VMs through libvirt (the `virt` crate), behind the `libvirt` feature.
