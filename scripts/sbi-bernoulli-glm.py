# sbi 0.27 NPE (its defaults: a five-layer MAF, 50 hidden units) on sbibm's
# bernoulli_glm at 10,000 simulations, training timed: the comparison quoted in
# docs/performance.md. The simulator transcribes sbibm's task (prior with its
# precision matrix, 100 Bernoulli spikes of the GLM, spike count and 9
# spike-triggered sums). Run scripts/fetch-sbibm.sh first, then, in a venv with
# `pip install sbi==0.27.0`:
#   python scripts/sbi-bernoulli-glm.py THREADS target/sbibm/bernoulli_glm/design.json
import json, sys, time, numpy as np, torch
from sbi.inference import NPE
torch.manual_seed(0); np.random.seed(0)
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
V = torch.tensor(np.array(json.load(open(sys.argv[2]))["design"]).reshape(100, 10), dtype=torch.float32)
M = 9
D = torch.diag(torch.ones(M)) - torch.diag(torch.ones(M - 1), -1)
F = D @ D + torch.diag(1.0 * torch.arange(M) / M) ** 0.5
Binv = torch.zeros(M + 1, M + 1); Binv[0, 0] = 0.5; Binv[1:, 1:] = F.T @ F
prior = torch.distributions.MultivariateNormal(torch.zeros(M + 1), precision_matrix=Binv)
theta = prior.sample((10000,))
z = torch.sigmoid(theta @ V.T)
y = torch.bernoulli(z)
x = torch.cat([y.sum(1, keepdim=True), y @ V[:, 1:]], 1)
inf = NPE(prior)
inf.append_simulations(theta, x)
t = time.time()
inf.train()
print(f"threads {threads}: training {time.time() - t:.1f} s, epochs {inf.summary['epochs_trained']}")
