package leader

import "pflex/gossip"

// PoolView adapts a gossip pool to the tracker's Gossip interface.
func PoolView(p *gossip.Pool) Gossip { return poolView{p} }

type poolView struct{ p *gossip.Pool }

func (v poolView) Leader() (Leader, bool) {
	m, ok := v.p.Leader()
	if !ok {
		return Leader{}, false
	}
	return Leader{ID: m.Meta.ID, API: m.Meta.API, Term: m.Meta.Term, Via: ViaGossip}, true
}

func (v poolView) MDMs() []Leader {
	var out []Leader
	for _, m := range v.p.Alive(gossip.CapMDM) {
		out = append(out, Leader{ID: m.Meta.ID, API: m.Meta.API})
	}
	return out
}

// Subscribe turns the pool's events into bare wake-ups; the tracker re-reads the whole view.
func (v poolView) Subscribe() (<-chan struct{}, func()) {
	events, cancel := v.p.Subscribe()
	out := make(chan struct{}, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case _, ok := <-events:
				if !ok {
					return
				}
				select {
				case out <- struct{}{}:
				default: // a wake-up is already pending; it will read the newest view
				}
			}
		}
	}()
	return out, func() {
		cancel()
		close(stop)
	}
}
