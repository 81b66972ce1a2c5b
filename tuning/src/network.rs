//! Network interfaces: RX/TX queues, the CPUs their IRQs land on, and
//! RPS/XPS steering.

use serde::Serialize;

use crate::InspectError;
use crate::cpulist;
use crate::host::Host;

/// One line of `/proc/interrupts` with a numbered IRQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    /// IRQ number.
    pub irq: u32,
    /// Interrupt counts per CPU column.
    pub counts: Vec<u64>,
    /// Action names (last column, comma separated), e.g. `eth0-TxRx-0`.
    pub actions: Vec<String>,
}

/// Parses `/proc/interrupts`, keeping numbered IRQs (not `NMI`, `LOC`...).
pub fn parse_interrupts(text: &str) -> Vec<IrqLine> {
    let mut lines = text.lines();
    let columns = lines.next().map_or(0, |h| h.split_whitespace().count());
    let mut irqs = Vec::new();
    for line in lines {
        let Some((head, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = head.trim().parse() else {
            continue;
        };
        let tokens: Vec<&str> = rest.split_whitespace().collect();
        let counts: Vec<u64> = tokens
            .iter()
            .take(columns)
            .map_while(|t| t.parse().ok())
            .collect();
        let described = &tokens[counts.len()..];
        // The description is `chip hwirq-type name[, name...]`; names follow the
        // second token.
        let actions = described.get(2..).unwrap_or_default().join(" ");
        let actions = actions
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        irqs.push(IrqLine {
            irq,
            counts,
            actions,
        });
    }
    irqs
}

/// Whether an IRQ action name belongs to an interface: named after it
/// (`eth0`, `eth0-TxRx-3`) or after its device (`virtio2-input.0`,
/// `mlx5_comp0@pci:0000:3b:00.0`).
pub fn action_matches(action: &str, iface: &str, device: Option<&str>) -> bool {
    let named = |name: &str| {
        action == name
            || action.starts_with(&format!("{name}-"))
            || action.contains(&format!("-{name}-"))
            || action.ends_with(&format!("@{name}"))
            || action.ends_with(&format!("@pci:{name}"))
    };
    named(iface) || device.is_some_and(named)
}

/// An interface's IRQ and where it may be delivered.
#[derive(Debug, Clone, Serialize)]
pub struct Irq {
    /// IRQ number.
    pub irq: u32,
    /// Its action name in `/proc/interrupts`.
    pub name: String,
    /// `/proc/irq/N/smp_affinity_list`: the CPUs it may be delivered to.
    pub affinity: Option<Vec<u32>>,
    /// `/proc/irq/N/effective_affinity_list`: the CPUs the interrupt
    /// controller actually delivers it to (often one of `affinity`).
    pub effective: Option<Vec<u32>>,
}

impl Irq {
    /// Where the IRQ lands: the effective affinity when the kernel reports
    /// it, else the configured one.
    pub fn lands_on(&self) -> Option<&[u32]> {
        self.effective.as_deref().or(self.affinity.as_deref())
    }
}

/// One network interface.
#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// The device the interface sits on (PCI address, `virtioN`), if any.
    pub device: Option<String>,
    /// Number of `queues/rx-*`.
    pub rx_queues: usize,
    /// Number of `queues/tx-*`.
    pub tx_queues: usize,
    /// IRQs attributed to the interface.
    pub irqs: Vec<Irq>,
    /// Union of the CPUs the IRQs land on ([`Irq::lands_on`]).
    pub irq_cpus: Vec<u32>,
    /// CPUs named by any `rx-*/rps_cpus` mask (empty: RPS off).
    pub rps_cpus: Vec<u32>,
    /// CPUs named by any `tx-*/xps_cpus` mask (empty: XPS off or unsupported).
    pub xps_cpus: Vec<u32>,
    /// Loopback interface (no hardware, no IRQs).
    pub loopback: bool,
}

/// Reads every interface under `/sys/class/net`.
pub fn read(host: &Host) -> Result<Vec<Interface>, InspectError> {
    let irq_lines = parse_interrupts(&host.read("/proc/interrupts")?.unwrap_or_default());
    let mut interfaces = Vec::new();
    for name in host.list("/sys/class/net")? {
        let base = format!("/sys/class/net/{name}");
        // Entries without `type` are not interfaces (`bonding_masters`).
        let Some(kind) = host.read_trimmed(&format!("{base}/type"))? else {
            continue;
        };
        let device = host.link_name(&format!("{base}/device"));
        let queues = host.list(&format!("{base}/queues"))?;
        let mut rps_cpus = Vec::new();
        let mut xps_cpus = Vec::new();
        for queue in &queues {
            let (file, into) = if queue.starts_with("rx-") {
                ("rps_cpus", &mut rps_cpus)
            } else {
                ("xps_cpus", &mut xps_cpus)
            };
            if let Some(mask) = host.read(&format!("{base}/queues/{queue}/{file}"))? {
                into.extend(cpulist::parse_mask(&mask)?);
            }
        }
        let mut irqs = Vec::new();
        for line in &irq_lines {
            if let Some(action) = line
                .actions
                .iter()
                .find(|a| action_matches(a, &name, device.as_deref()))
            {
                let list = |file: &str| -> Result<Option<Vec<u32>>, InspectError> {
                    let text = host.read(&format!("/proc/irq/{}/{file}", line.irq))?;
                    Ok(text.map(|t| cpulist::parse(&t)).transpose()?)
                };
                irqs.push(Irq {
                    irq: line.irq,
                    name: action.clone(),
                    affinity: list("smp_affinity_list")?,
                    effective: list("effective_affinity_list")?,
                });
            }
        }
        let mut irq_cpus: Vec<u32> = irqs
            .iter()
            .filter_map(Irq::lands_on)
            .flatten()
            .copied()
            .collect();
        for list in [&mut irq_cpus, &mut rps_cpus, &mut xps_cpus] {
            list.sort_unstable();
            list.dedup();
        }
        // ARPHRD_LOOPBACK
        let loopback = kind == "772";
        interfaces.push(Interface {
            rx_queues: queues.iter().filter(|q| q.starts_with("rx-")).count(),
            tx_queues: queues.iter().filter(|q| q.starts_with("tx-")).count(),
            name,
            device,
            irqs,
            irq_cpus,
            rps_cpus,
            xps_cpus,
            loopback,
        });
    }
    Ok(interfaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS: &str = "           CPU0       CPU1       \n\
 26:          0         15  IO-APIC   4-edge      ttyS0\n\
 38:          0       8673 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
 39:       6740          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0\n\
 90:          1          2  IR-PCI-MSI 524288-edge      eth1-TxRx-0, eth1-TxRx-1\n\
 91:          0          0  IR-PCI-MSI 524289-edge\n\
NMI:          0          0   Non-maskable interrupts\n\
ERR:          0\n";

    #[test]
    fn parses_numbered_irqs() {
        let irqs = parse_interrupts(INTERRUPTS);
        assert_eq!(irqs.len(), 5);
        assert_eq!(
            irqs[1],
            IrqLine {
                irq: 38,
                counts: vec![0, 8673],
                actions: vec!["virtio2-input.0".into()]
            }
        );
        assert_eq!(
            irqs[3].actions,
            vec!["eth1-TxRx-0".to_string(), "eth1-TxRx-1".into()]
        );
        assert!(irqs[4].actions.is_empty());
    }

    #[test]
    fn irqs_land_on_their_effective_affinity() {
        let mut irq = Irq {
            irq: 38,
            name: "virtio2-input.0".into(),
            affinity: Some(vec![0, 1]),
            effective: Some(vec![1]),
        };
        assert_eq!(irq.lands_on(), Some(&[1][..]));
        irq.effective = None;
        assert_eq!(irq.lands_on(), Some(&[0, 1][..]));
    }

    #[test]
    fn matches_interface_and_device_names() {
        assert!(action_matches("eth0-TxRx-3", "eth0", None));
        assert!(action_matches("eth0", "eth0", None));
        assert!(!action_matches("eth01-TxRx-3", "eth0", None));
        assert!(action_matches("i40e-ens1f0-TxRx-7", "ens1f0", None));
        assert!(!action_matches("i40e-ens1f0-TxRx-7", "ens1", None));
        assert!(!action_matches(
            "ice-0000:01:00.0:misc",
            "eth0",
            Some("0000:01:00.0")
        ));
        assert!(action_matches("virtio2-input.0", "eth0", Some("virtio2")));
        assert!(!action_matches("virtio21-input.0", "eth0", Some("virtio2")));
        assert!(action_matches(
            "mlx5_comp3@pci:0000:3b:00.0",
            "ens1f0",
            Some("0000:3b:00.0")
        ));
    }
}
