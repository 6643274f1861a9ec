import numpy as np, json
rows=json.load(open('benchmarks/results/identity.json'))['data']['rows']
yaw=np.abs([r['yaw'] for r in rows]); print(sorted(np.round(yaw[yaw>45],1)))
fr=yaw<=40.5; hd=(yaw>=49.5)&(yaw<=75.5); print(fr.sum(), hd.sum())
d={}
for f in ('exp1','exp3','exp5','exp6'):
    z=np.load(f'/tmp/hp2/{f}.npz'); d.update({k:z[k] for k in z.files})
z=np.load('/tmp/hp2/exp4.npz'); d['look A alone']=z['nA']; d['look B alone']=z['nB']
lib=np.array([r['library default_nme'] for r in rows]); print('check json default vs mean rerun max diff', np.abs(lib-d['mean']).max())
for k,n in d.items():
    print(f"| {k} | {100*np.median(n[fr]):.2f} | {100*np.max(n[fr]):.1f} | {100*np.median(n[hd]):.2f} | {100*np.max(n[hd]):.1f} | {int((n[hd]>0.08).sum())} | {', '.join(str(i) for i in np.flatnonzero(hd&(n>0.08)))} |")
