// Package apidoc describes the fleet's HTTP API as an OpenAPI 3.1
// document, which the gate serves at GET /openapi.json. The document is
// made from one table (Routes); a test in internal/app fails when the table
// and the services' route tables disagree, so the document stays true.
package apidoc

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
)

// Auth says who may call a route.
type Auth string

// Who may call a route.
const (
	Anyone   Auth = ""         // no token needed
	Optional Auth = "optional" // a member's token adds to the answer
	Member   Auth = "member"   // a member's token (with --auth=on)
	Admin    Auth = "admin"    // the admin key (with --auth=on)
)

// Param is one parameter of a route. Parameters come from the query string
// or the body (JSON or form), body values winning, as in the book.
type Param struct {
	Name     string
	Type     string // integer, number, string
	Required bool
	Desc     string
	Enum     []string
}

// Route is one route of the API.
type Route struct {
	Method, Path string
	Summary      string
	Auth         Auth
	Params       []Param
	// Header is a request header the route reads (Idempotency-Key).
	Header string
}

func p(name, typ string, req bool, desc string, enum ...string) Param {
	return Param{Name: name, Type: typ, Required: req, Desc: desc, Enum: enum}
}

// Routes is the whole HTTP API: the services' routes and the gate's own.
var Routes = []Route{
	{Method: "GET", Path: "/goods", Summary: "One good by id, or a page of goods (lowest id first, with a next cursor)", Params: []Param{
		p("id", "integer", false, "a good's id: that good only"),
		p("limit", "integer", false, "page size, 1–50 (default 20)"),
		p("after", "string", false, "the next cursor of the previous page")}},
	{Method: "POST", Path: "/goods", Summary: "Add a good", Auth: Admin, Params: []Param{
		p("name", "string", true, "1–128 characters"),
		p("category", "string", false, "at most 64 characters"),
		p("price", "integer", true, "0 to 2^53 − 1"),
		p("description", "string", false, "at most 2,000 characters")}},
	{Method: "PATCH", Path: "/goods", Summary: "Change some fields of a good (the others are kept); answers the good as changed", Auth: Admin, Params: []Param{
		p("id", "integer", true, "the good's id"),
		p("name", "string", false, "1–128 characters"),
		p("category", "string", false, "at most 64 characters"),
		p("price", "integer", false, "0 to 2^53 − 1"),
		p("description", "string", false, "at most 2,000 characters")}},
	{Method: "DELETE", Path: "/goods", Summary: "Delete a good", Auth: Admin, Params: []Param{p("id", "integer", true, "the good's id")}},

	{Method: "POST", Path: "/members", Summary: "Sign up", Params: []Param{
		p("username", "string", true, "1–64 letters, digits, _ . -"), p("password", "string", true, "8–256 characters")}},
	{Method: "GET", Path: "/members", Summary: "The book's login (prefer POST /sessions): answers a token", Params: []Param{
		p("username", "string", true, ""), p("password", "string", true, "")}},
	{Method: "DELETE", Path: "/members", Summary: "Delete one's own account", Auth: Member, Params: []Param{p("username", "string", true, "one's own")}},

	{Method: "GET", Path: "/members/name", Summary: "A member's username by id (chat names senders by it)", Params: []Param{p("id", "integer", true, "the member's id")}},

	{Method: "POST", Path: "/sessions", Summary: "Log in: answers a bearer token, its member and expiry", Params: []Param{
		p("username", "string", true, ""), p("password", "string", true, "")}},
	{Method: "GET", Path: "/sessions", Summary: "Who the token is, and until when", Auth: Member},
	{Method: "DELETE", Path: "/sessions", Summary: "Log out: revoke the token on every gate", Auth: Member},

	{Method: "POST", Path: "/purchases", Summary: "Buy a good", Auth: Member, Header: "Idempotency-Key", Params: []Param{
		p("goodsid", "integer", true, "the good bought"), p("userid", "integer", false, "the buyer: oneself (the token's member)")}},
	{Method: "GET", Path: "/purchases", Summary: "One's purchases, oldest first, in pages", Auth: Member, Params: []Param{
		p("limit", "integer", false, "page size, 1–1,000 (default 100)"), p("after", "string", false, "the next cursor of the previous page"),
		p("userid", "integer", false, "oneself")}},
	{Method: "DELETE", Path: "/purchases", Summary: "Cancel one's own purchase (again: the same answer; another member's, or none, is 404); it leaves the list and the rankings", Auth: Member, Params: []Param{
		p("id", "integer", true, "the purchase's id"), p("userid", "integer", false, "oneself")}},
	{Method: "GET", Path: "/rankings", Summary: "Best sellers", Params: []Param{
		p("top", "integer", false, "1–100 (default 10)"), p("period", "string", false, "default all", "day", "week", "all")}},

	{Method: "POST", Path: "/reactions", Summary: "Like or dislike a good (one reaction per member and good)", Auth: Member, Params: []Param{
		p("goodsid", "integer", true, ""), p("reaction", "string", true, "", "like", "dislike")}},
	{Method: "GET", Path: "/reactions", Summary: "A good's likes and dislikes, and one's own with a token", Auth: Optional, Params: []Param{p("goodsid", "integer", true, "")}},
	{Method: "DELETE", Path: "/reactions", Summary: "Withdraw one's reaction", Auth: Member, Params: []Param{p("goodsid", "integer", true, "")}},

	{Method: "POST", Path: "/ratings", Summary: "Rate a good, 1–5 stars (a new rating replaces one's old one)", Auth: Member, Params: []Param{
		p("goodsid", "integer", true, ""), p("stars", "integer", true, "1–5")}},
	{Method: "GET", Path: "/ratings", Summary: "A good's ratings: count, average, histogram", Params: []Param{p("goodsid", "integer", true, "")}},
	{Method: "DELETE", Path: "/ratings", Summary: "Withdraw one's rating (404 when one never rated the good)", Auth: Member, Params: []Param{p("goodsid", "integer", true, "")}},

	{Method: "POST", Path: "/stores", Summary: "Add a store", Auth: Admin, Params: []Param{
		p("name", "string", true, ""), p("longitude", "number", true, "within ±180"), p("latitude", "number", true, "within ±85.05112878")}},
	{Method: "GET", Path: "/stores", Summary: "Stores near a point, nearest first, with their distance in km", Params: []Param{
		p("longitude", "number", true, ""), p("latitude", "number", true, ""),
		p("radius", "number", false, "km, default 5, at most 1,000"), p("limit", "integer", false, "default 20, at most 100")}},
	{Method: "PATCH", Path: "/stores", Summary: "Change some fields of a store (the others are kept); answers the store as changed", Auth: Admin, Params: []Param{
		p("id", "integer", true, ""), p("name", "string", false, ""),
		p("longitude", "number", false, "within ±180"), p("latitude", "number", false, "within ±85.05112878")}},
	{Method: "DELETE", Path: "/stores", Summary: "Remove a store", Auth: Admin, Params: []Param{p("id", "integer", true, "")}},

	{Method: "POST", Path: "/chat", Summary: "Post a message to a room", Auth: Member, Params: []Param{
		p("room", "string", true, "1–64 letters, digits, - _"), p("text", "string", true, "at most 2,000 characters"),
		p("userid", "string", false, "with --auth=off: the poster's name")}},
	{Method: "GET", Path: "/chat/history", Summary: "A room's messages, oldest first; older pages with before", Params: []Param{
		p("room", "string", true, ""), p("limit", "integer", false, "default 50, at most 500"), p("before", "string", false, "the next cursor of the previous page")}},
	{Method: "GET", Path: "/chat", Summary: "A chat socket (WebSocket): the room's history, then its live messages; send {\"text\": \"…\"}", Auth: Member, Params: []Param{
		p("room", "string", true, ""), p("token", "string", false, "the bearer token, for browsers (they cannot set headers on a WebSocket)"),
		p("userid", "string", false, "with --auth=off or the admin key: the name spoken as")}},

	{Method: "GET", Path: "/healthz", Summary: "Alive: 200 while the gate runs"},
	{Method: "GET", Path: "/readyz", Summary: "Ready: 200 when the gate has the distributor's list and reaches its dependencies (503 otherwise; degraded ones are named)"},
	{Method: "GET", Path: "/openapi.json", Summary: "This document"},
	{Method: "GET", Path: "/console/fleet", Summary: "The operator view's figures: every listed process, each instance's state, and requests, errors and p99 per route over the last seconds (the web console at / shows them)", Auth: Admin},
}

// Document returns the OpenAPI 3.1 document of Routes.
func Document() []byte {
	errorSchema := map[string]any{"$ref": "#/components/schemas/Error"}
	paths := map[string]map[string]any{}
	for _, r := range Routes {
		op := map[string]any{
			"summary":     r.Summary,
			"operationId": strings.ToLower(r.Method) + strings.NewReplacer("/", "_", ".", "_").Replace(r.Path),
			"tags":        []string{strings.Split(strings.TrimPrefix(r.Path, "/"), "/")[0]},
			"responses": map[string]any{
				"200":     map[string]any{"description": "success: errorcode 0, and the route's fields", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Answer"}}}},
				"default": map[string]any{"description": "failure: errorcode is the HTTP status", "content": map[string]any{"application/json": map[string]any{"schema": errorSchema}}},
			},
		}
		switch r.Auth {
		case Member, Admin:
			op["security"] = []any{map[string]any{"bearer": []string{}}}
			op["description"] = "Needs " + map[Auth]string{Member: "a member's token", Admin: "the admin key"}[r.Auth] + " as the bearer token (with --auth=on)."
		case Optional:
			op["security"] = []any{map[string]any{}, map[string]any{"bearer": []string{}}}
		}
		var params []any
		if r.Header != "" {
			params = append(params, map[string]any{"name": r.Header, "in": "header", "schema": map[string]any{"type": "string", "maxLength": 257}})
		}
		if r.Method == "POST" {
			props, required := map[string]any{}, []string{}
			for _, p := range r.Params {
				props[p.Name] = schema(p)
				if p.Required {
					required = append(required, p.Name)
				}
			}
			body := map[string]any{"type": "object", "properties": props}
			if len(required) > 0 {
				body["required"] = required
			}
			op["requestBody"] = map[string]any{"content": map[string]any{
				"application/json":                  map[string]any{"schema": body},
				"application/x-www-form-urlencoded": map[string]any{"schema": body},
			}}
		} else {
			for _, p := range r.Params {
				params = append(params, map[string]any{"name": p.Name, "in": "query", "required": p.Required, "schema": schema(p), "description": p.Desc})
			}
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if paths[r.Path] == nil {
			paths[r.Path] = map[string]any{}
		}
		paths[r.Path][strings.ToLower(r.Method)] = op
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "microshop",
			"version":     "1",
			"description": "The shop's HTTP API, served by every gate. Parameters may also come from the query string; body values win. Every answer is JSON with errorcode (0 = success, else the HTTP status) and errormessage.",
		},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "a member's token (POST /sessions) or the admin key"}},
			"schemas": map[string]any{
				"Error": map[string]any{"type": "object", "required": []string{"errorcode", "errormessage"}, "properties": map[string]any{
					"errorcode": map[string]any{"type": "integer"}, "errormessage": map[string]any{"type": "string"}}},
				"Answer": map[string]any{"type": "object", "properties": map[string]any{
					"errorcode": map[string]any{"type": "integer", "const": 0}, "errormessage": map[string]any{"type": "string"},
					"results": map[string]any{"type": "array"}, "next": map[string]any{"type": "string", "description": "cursor of the next page, when more may follow"}}},
			},
		},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return b
}

func schema(p Param) map[string]any {
	s := map[string]any{"type": p.Type}
	if p.Desc != "" {
		s["description"] = p.Desc
	}
	if len(p.Enum) > 0 {
		s["enum"] = p.Enum
	}
	return s
}

// Keys returns "METHOD /path" of every route, sorted.
func Keys() []string {
	var out []string
	for _, r := range Routes {
		out = append(out, r.Method+" "+r.Path)
	}
	sort.Strings(out)
	return out
}

// Handler serves the document (made once).
func Handler() http.Handler {
	doc := Document()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
}
