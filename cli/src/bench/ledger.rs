//! Accounting for every record of one stream: which were acknowledged by the daemon, which
//! arrived as results, and in what order. At the end, an acknowledged record that never
//! arrived is *lost*; one that arrived twice is *duplicated*; one that arrived after a record
//! the broker stored later (a higher input offset) is *reordered*. Order is judged by input
//! offset, not by sequence number: two HTTP requests in flight at once may be stored in either
//! order, and the gateway promises results in the order records were stored.

const ACKED: u8 = 1;
const RECEIVED: u8 = 2;

/// Totals over one or more streams.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub acked: u64,
    /// Distinct records received (duplicates not counted again).
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Received although their send was not acknowledged (a failed request may still have
    /// stored them): not an error, but worth knowing.
    pub received_unacked: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Self) {
        self.acked += o.acked;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.received_unacked += o.received_unacked;
    }
}

/// One stream's records by sequence number.
#[derive(Debug, Default)]
pub struct StreamLedger {
    flags: Vec<u8>,
    /// Input offset of the latest-stored record received so far.
    highest_offset: Option<i64>,
    duplicated: u64,
    reordered: u64,
    /// Acknowledged and not yet received: the run is drained when this is zero everywhere.
    waiting: u64,
}

impl StreamLedger {
    fn flag(&mut self, seq: u64) -> &mut u8 {
        let i = seq as usize;
        if i >= self.flags.len() {
            self.flags.resize(i + 1, 0);
        }
        &mut self.flags[i]
    }

    /// Marks `seq` acknowledged by the daemon (or broker).
    pub fn ack(&mut self, seq: u64) {
        let f = self.flag(seq);
        if *f & ACKED == 0 {
            *f |= ACKED;
            if *f & RECEIVED == 0 {
                self.waiting += 1;
            }
        }
    }

    /// Marks `seq`, stored at input `offset`, received; returns `false` for a duplicate.
    pub fn receive(&mut self, seq: u64, offset: i64) -> bool {
        let f = self.flag(seq);
        if *f & RECEIVED != 0 {
            self.duplicated += 1;
            return false;
        }
        *f |= RECEIVED;
        if *f & ACKED != 0 {
            self.waiting -= 1;
        }
        match self.highest_offset {
            Some(h) if offset < h => self.reordered += 1,
            _ => self.highest_offset = Some(offset),
        }
        true
    }

    pub fn waiting(&self) -> u64 {
        self.waiting
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            duplicated: self.duplicated,
            reordered: self.reordered,
            ..Totals::default()
        };
        for &f in &self.flags {
            let acked = f & ACKED != 0;
            let received = f & RECEIVED != 0;
            t.acked += u64::from(acked);
            t.received += u64::from(received);
            t.lost += u64::from(acked && !received);
            t.received_unacked += u64::from(received && !acked);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_delivery_is_clean() {
        let mut l = StreamLedger::default();
        for seq in 0..5 {
            l.ack(seq);
        }
        // A result may arrive before the send's acknowledgement does.
        assert!(l.receive(0, 10));
        // Stored in another order than sent (concurrent requests): still in order.
        assert!(l.receive(2, 11));
        assert!(l.receive(1, 12));
        for seq in 3..5 {
            assert!(l.receive(seq, 10 + seq as i64));
        }
        assert_eq!(l.waiting(), 0);
        let t = l.totals();
        assert_eq!(
            (t.acked, t.received, t.lost, t.duplicated, t.reordered),
            (5, 5, 0, 0, 0)
        );
    }

    #[test]
    fn loss_duplicates_and_reordering_are_counted() {
        let mut l = StreamLedger::default();
        for seq in 0..6 {
            l.ack(seq);
        }
        l.receive(0, 0);
        l.receive(2, 2);
        l.receive(1, 1); // stored before 2, arrived after it: reordered
        assert!(!l.receive(2, 2)); // again: duplicated
        l.receive(5, 5);
        // 3 and 4 never arrive.
        assert_eq!(l.waiting(), 2);
        let t = l.totals();
        assert_eq!(t.lost, 2);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.received, 4);
    }

    #[test]
    fn unacknowledged_records_are_not_lost() {
        let mut l = StreamLedger::default();
        l.ack(0);
        l.receive(0, 0);
        l.receive(1, 1); // its send failed, yet it was stored
        let t = l.totals();
        assert_eq!((t.lost, t.received_unacked), (0, 1));
    }
}
