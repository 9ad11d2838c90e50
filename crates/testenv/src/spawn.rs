//! Starting the component processes, and the free ports they listen on.

use crate::bins::{Binaries, Binary};
use crate::components::{self, Layout, APISERVER, CONTROLLER_MANAGER, ETCD};
use crate::error::Error;
use crate::options::Options;
use crate::process::Process;

pub(crate) fn spawn_etcd(bins: &Binaries, layout: &Layout) -> Result<Process, Error> {
    Process::spawn(
        ETCD,
        bins.path(Binary::Etcd),
        &components::etcd_args(layout),
        &layout.log(ETCD),
    )
}

pub(crate) fn spawn_apiserver(
    bins: &Binaries,
    layout: &Layout,
    options: &Options,
) -> Result<Process, Error> {
    Process::spawn(
        APISERVER,
        bins.path(Binary::KubeApiserver),
        &components::apiserver_args(layout, &options.extra_apiserver_args),
        &layout.log(APISERVER),
    )
}

pub(crate) fn spawn_controller_manager(bins: &Binaries, layout: &Layout) -> Result<Process, Error> {
    Process::spawn(
        CONTROLLER_MANAGER,
        bins.path(Binary::KubeControllerManager),
        &components::controller_manager_args(layout),
        &layout.log(CONTROLLER_MANAGER),
    )
}

/// Distinct free loopback ports: all listeners are held open together so no port repeats, then
/// closed for the components to bind (a race a retry covers).
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in ports.iter_mut() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Error::FreePort)?;
        *port = listener.local_addr().map_err(Error::FreePort)?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_non_zero() {
        let ports: [u16; 3] = free_ports().unwrap();
        assert!(ports.iter().all(|p| *p != 0));
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        assert_ne!(ports[0], ports[2]);
    }
}
