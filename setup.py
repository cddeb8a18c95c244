"""Packaging for gmem, driven by settings.ini as nbdev 2 expects."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
c = cfg['DEFAULT']

licenses = {'apache2': 'Apache-2.0'}  # SPDX expression
statuses = ['Planning', 'Pre-Alpha', 'Alpha', 'Beta', 'Production/Stable', 'Mature', 'Inactive']
requirements = c.get('requirements', '').split()
dev_requirements = c.get('dev_requirements', '').split()
console_scripts = c.get('console_scripts', '').split()

setuptools.setup(
    name=c['lib_name'],
    version=c['version'],
    description=c['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    author=c['author'],
    author_email=c['author_email'],
    url=c['git_url'],
    project_urls={'Source': c['git_url']},
    keywords=c['keywords'].split(),
    license=licenses[c['license']],
    classifiers=[f'Development Status :: {c["status"]} - {statuses[int(c["status"])]}',
                 f'Intended Audience :: {c["audience"].title()}',
                 'Natural Language :: ' + c['language'].title(),
                 'Programming Language :: Python :: 3'],
    packages=setuptools.find_packages(include=['gmem', 'gmem.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    python_requires='>=' + c['min_python'],
    zip_safe=False,
    entry_points={'console_scripts': console_scripts,
                  'nbdev': [f'{c["lib_path"]}={c["lib_path"]}._modidx:d']},
)
