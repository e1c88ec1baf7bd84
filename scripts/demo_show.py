"""Prints what the demo shows: notification report, Close simulator state, Hull write-back."""
import json
import sys
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def leads(close):
    state = get(f"http://{close}/_sandbox/state")
    orgs = state.get("organizations", [state])
    return [lead for org in orgs for lead in org.get("leads", [])]


def main():
    cmd = sys.argv[1]
    if cmd == "notify":
        r = json.load(sys.stdin)
        print(f"    {r.get('http_calls')} call(s), {r.get('messages_delivered')}/{r.get('messages_total')} messages accepted")
    elif cmd == "count":
        ls = leads(sys.argv[2])
        print(len(ls), sum(len(lead.get("contacts", [])) for lead in ls))
    elif cmd == "close":
        for lead in leads(sys.argv[2])[:3]:
            contacts = [c.get("name") for c in lead.get("contacts", [])]
            print(f"    {lead['id']}  {lead.get('name')!r:28} url={lead.get('url')}  contacts={contacts}")
    elif cmd == "hull":
        state = get(f"http://{sys.argv[2]}/_sandbox/state")
        accounts, users = state.get("accounts", []), state.get("users", [])
        synced = [a for a in accounts if "closeio/id" in a.get("attributes", {})]
        synced_users = [u for u in users if "closeio/id" in u.get("attributes", {})]
        print(f"    {len(synced)} of {len(accounts)} accounts and {len(synced_users)} of {len(users)} users carry closeio/id")
        for a in synced[:3]:
            at = a["attributes"]
            print(f"    {at.get('domain')!r:34} closeio/id={at.get('closeio/id')}  closeio/status={at.get('closeio/status')}")


main()
