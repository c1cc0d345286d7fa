package app

import (
	"log/slog"

	"github.com/microshop/microshop/internal/cache"
	"github.com/microshop/microshop/internal/catalog"
	"github.com/microshop/microshop/internal/chat"
	"github.com/microshop/microshop/internal/goods"
	"github.com/microshop/microshop/internal/purchases"
	"github.com/microshop/microshop/internal/ratings"
	"github.com/microshop/microshop/internal/reactions"
	"github.com/microshop/microshop/internal/store"
	"github.com/microshop/microshop/internal/stores"
	"github.com/microshop/microshop/service"
)

// kind says how a component runs.
type kind int

const (
	kindDistributor kind = iota
	kindGate
	kindService
)

// deps are the shared resources handed to a service's constructor.
type deps struct {
	db    *store.DB
	cache *cache.Cache
	// goodsCache is the format of the goods' entries in cache (--goods-cache).
	goodsCache catalog.Format
	caller     *service.Client // calls other services; nil unless component.calls
	log        *slog.Logger
	sec        *securityOptions // session and lockout flags
}

// lookup returns the goods lookup of a service that calls goods.
func (d deps) lookup() *catalog.Lookup {
	return catalog.NewLookup(d.cache, d.goodsCache, d.caller)
}

// component is one row of the fleet table: `microshop all` starts every row
// in order and stops them in reverse; `microshop NAME` runs one row.
type component struct {
	name  string
	port  int // the book's default port
	kind  kind
	help  string
	calls bool // needs a Client to call other services
	// flags are the flag groups the component uses (flags.go): its
	// command registers only those, and all the union of every row's.
	flags group
	// routes builds the service's handlers (kindService only).
	routes func(d deps) map[string]service.Handler
}

// components returns the fleet table, in start order.
func components() []component {
	return []component{
		{name: "distributor", port: 9000, kind: kindDistributor,
			flags: gProcess,
			help:  "the registry: knows where every process is and pushes the list to all"},
		{name: "goods", port: 9010, kind: kindService,
			flags: gProcess | gRegister | gDB | gRedis | gService | gGoodsCache,
			help:  "POST/GET/PATCH/DELETE /goods: the catalogue, cached in Redis",
			routes: func(d deps) map[string]service.Handler {
				return goods.New(d.db, catalog.Entries{Redis: d.cache, Format: d.goodsCache}, d.log, goods.NearCache()).Routes()
			}},
		{name: "members", port: 9020, kind: kindService,
			flags: gProcess | gRegister | gDB | gRedis | gService | gMembers,
			help:  "POST/GET/DELETE /members, GET /members/name: accounts with argon2id passwords",
			routes: func(d deps) map[string]service.Handler {
				return newMembers(d)
			}},
		{name: "purchases", port: 9030, kind: kindService, calls: true,
			flags: gProcess | gRegister | gDB | gRedis | gService | gCaller | gGoodsCache,
			help:  "POST/GET/DELETE /purchases, GET /rankings: buying (and cancelling) (goods checked in Redis first, then asked of the goods service) and best sellers",
			routes: func(d deps) map[string]service.Handler {
				return purchases.New(d.db, d.cache, d.lookup(), d.log).Routes()
			}},
		{name: "reactions", port: 9040, kind: kindService, calls: true,
			flags: gProcess | gRegister | gDB | gRedis | gService | gCaller | gGoodsCache,
			help:  "POST/GET/DELETE /reactions: likes and dislikes per good (Redis counters)",
			routes: func(d deps) map[string]service.Handler {
				return reactions.New(d.db, d.cache, d.lookup(), d.log).Routes()
			}},
		{name: "ratings", port: 9050, kind: kindService, calls: true,
			flags: gProcess | gRegister | gDB | gRedis | gService | gCaller | gGoodsCache,
			help:  "POST/GET/DELETE /ratings: star ratings per good (Redis hashes)",
			routes: func(d deps) map[string]service.Handler {
				return ratings.New(d.db, d.cache, d.lookup(), d.log).Routes()
			}},
		{name: "stores", port: 9060, kind: kindService,
			flags: gProcess | gRegister | gDB | gRedis | gService,
			help:  "POST/GET/PATCH/DELETE /stores: stores near a point (Redis geo)",
			routes: func(d deps) map[string]service.Handler {
				return stores.New(d.db, d.cache, d.log).Routes()
			}},
		{name: "chat", port: 9070, kind: kindService, calls: true,
			flags: gProcess | gRegister | gDB | gRedis | gService | gCaller,
			help:  "POST /chat, GET /chat/history: chat rooms, fanned out to every gate by Redis pub/sub; senders named by the members service",
			routes: func(d deps) map[string]service.Handler {
				return chat.New(d.db, d.cache, d.log, chat.Names(d.caller)).Routes()
			}},
		{name: "gate", port: 8000, kind: kindGate,
			flags: gProcess | gRegister | gRedis | gCaller | gGate,
			help:  "the HTTP front door: routes each request to an instance of its service"},
	}
}

func findComponent(name string) (component, bool) {
	for _, c := range components() {
		if c.name == name {
			return c, true
		}
	}
	return component{}, false
}
