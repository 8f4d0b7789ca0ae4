# P(A > B) of this FuncID against the width-3 study's agents on the same fresh seeds 5-14, from the two stats.json files
# (per-seed AUC and last-10 means), with the Python rliable package (5,000 bootstrap draws). Run from the repository root.
import json, numpy as np
from rliable import library as rly, metrics
np.random.seed(0)  # the bootstrap draws from numpy's global generator
pub = json.load(open('agents/results/cartpole_tuned/stats.json'))
new = json.load(open('agents/results/cartpole_w3_full_k2_clip_fresh/stats.json'))
agents = {a['name']: a for a in pub['agents']}
full = new['agents'][0]
print('pub seeds', [a['seeds'] for a in pub['agents']], 'new', full['seeds'])
for key in ['auc', 'last10']:
    for other in ['mle', 'funcid', 'omd', 'vep']:
        x = np.array(full[key])[:, None]; y = np.array(agents[other][key])[:, None]
        pi, ci = rly.get_interval_estimates({'p': (x, y)}, metrics.probability_of_improvement, reps=5000)
        print(key, 'P(full >', other, ') = %.2f [%.2f, %.2f]' % (float(np.ravel(pi['p'])[0]), float(np.ravel(ci['p'])[0]), float(np.ravel(ci['p'])[1])))
